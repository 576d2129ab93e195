"""``ClassVocabulary``: a class list + its subword model, mapping free-text prompts to class ids.

Built from the shipped models (``builtin``), a dataset's class names (``for_class_names``, trained
on the fly and cached) or files written by ``save``. Every answer is a ranked list or ids above a
threshold; below it ``NoMatchError`` names the closest classes. Each ``ClassMatch`` also says what
of the class matched (``matched``: the emoji names of an emoji class, else the alias).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import sentencepiece as spm

from runkit.fileio import atomic_write

from .classes import (EMOJI_LEXICON_FILE, VOCAB_DIR, ClassEntry, ClassMember, classes_from_names, digits_classes,
                      emoji_class_names, imagenet_wordnet)
from .matcher import ClassMatcher
from .text import tokenize
from .training import (FORMAT_VERSION, VocabSettings, build_record, cache_key, classes_digest, members_digest,
                       train_piece_model)

BUILTIN_VOCABULARIES = ("imagenet", "digits", "emoji")
MAX_PROMPT_CHARS = 1000
DEFAULT_THRESHOLD = 0.3
OPTIONAL_THRESHOLD = 0.75  # a part after "with" must clearly name a class to add one
# Hints name classes of the vocabulary at hand: for ImageNet a golden retriever and a tabby cat,
# for digits the README's "a seven and a three"; the first pair that exists is used.
EXAMPLE_CLASS_IDS = ((207, 281), (7, 3), (0, 1))
# Vocabularies whose class names are not things to draw have an example prompt of their own.
EXAMPLE_PROMPTS = {"emoji": "a cat and a pizza"}


class PromptError(ValueError):
    """The prompt is not a usable string: not a str, empty, or too long."""


class _RankedClass(NamedTuple):
    class_id: int
    name: str
    score: float  # in [0, 1]; 1 = the prompt is exactly a name of the class


class ClassMatch(_RankedClass):
    """A class a prompt matches: the tuple ``(class_id, name, score)`` plus ``matched``.

    ``matched`` says what of the class the prompt named: for a class of named members (an emoji
    class) the members' names ("cat"; "cat", "dog" for "a cat and a dog"), otherwise the class
    aliases that scored best ("tabby cat"). It is an attribute, not a tuple field, so a
    ``ClassMatch`` still unpacks and compares as ``(class_id, name, score)``; ``_replace`` and
    ``_make`` give ``matched=()``.
    """

    matched: tuple[str, ...] = ()

    def __new__(cls, class_id: int, name: str, score: float, matched: Sequence[str] = ()):
        self = super().__new__(cls, class_id, name, score)
        self.matched = tuple(matched)
        return self

    def __repr__(self) -> str:
        return (f"ClassMatch(class_id={self.class_id!r}, name={self.name!r}, score={self.score!r}, "
                f"matched={self.matched!r})")


class NoMatchError(ValueError):
    """No class scores above the threshold; ``closest`` holds the best candidates anyway."""

    def __init__(self, text: str, closest: Sequence[ClassMatch], threshold: float, reason: str = ""):
        self.text = text
        self.closest = list(closest)
        self.threshold = threshold
        names = ", ".join(f"{m.name!r} ({m.score:.2f})" for m in self.closest) or "none"
        reason = reason or f"no class scores at least {threshold:.2f}"
        super().__init__(f"No class matches {text!r}: {reason}. Closest classes: {names}.")


class ClassVocabulary:
    """A class list + its subword model; maps free-text prompts to class ids.

    Build with ``ClassVocabulary.builtin("imagenet"|"digits"|"emoji")``, ``for_class_names(names,
    cache_dir)`` or ``load(path.model)``. ``threshold`` is the default minimum score in [0, 1].
    """

    def __init__(
        self,
        classes: Sequence[ClassEntry],
        model_proto: bytes,
        *,
        name: str = "custom",
        settings: VocabSettings | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ):
        if not classes:
            raise ValueError("a ClassVocabulary needs at least one class")
        self.name = name
        self.classes = tuple(classes)
        self.settings = settings
        self.threshold = _check_threshold(threshold)
        self.model_proto = model_proto
        self._pieces = spm.SentencePieceProcessor(model_proto=model_proto)
        self._matcher = ClassMatcher(self.classes, self._pieces)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def builtin(cls, name: str) -> "ClassVocabulary":
        """The shipped vocabulary "imagenet" (1,000 classes), "digits" (0-9) or "emoji" (the emoji dataset's 74)."""
        if name not in BUILTIN_VOCABULARIES:
            raise ValueError(f"unknown builtin vocabulary {name!r}; choose one of {BUILTIN_VOCABULARIES}")
        return _load_builtin(name)

    @classmethod
    def for_class_names(
        cls,
        names: Sequence[str],
        cache_dir: str | os.PathLike | None = None,
        synset_names: Mapping[str, str | Sequence[str]] | None = None,
    ) -> "ClassVocabulary":
        """The vocabulary of a dataset's class names, e.g. ImageFolder folders in class-id order.

        The ImageNet, digits and emoji class lists (torchvision names, WordNet ids, "0".."9",
        "zero".."nine", the emoji dataset's 74 subgroup classes) give the shipped vocabularies.
        Others get a subword model trained on the fly (about a second), cached as
        ``class_vocab-<hash>.model/.json`` in ``cache_dir``.
        """
        classes = classes_from_names(names, synset_names)
        builtin = _builtin_for(list(names))
        if builtin is not None:
            return builtin
        settings = VocabSettings.for_classes(classes)
        if cache_dir is None:
            return cls(classes, train_piece_model(classes, settings), settings=settings)
        stem = Path(cache_dir) / f"class_vocab-{cache_key(classes, settings)}"
        model_path = stem.with_suffix(".model")
        if model_path.exists() and stem.with_suffix(".json").exists():
            vocab = cls.load(model_path)
            if classes_digest(vocab.classes) == classes_digest(classes):
                return vocab
        vocab = cls(classes, train_piece_model(classes, settings), settings=settings, name=stem.name)
        vocab.save(model_path)
        return vocab

    @classmethod
    def load(cls, path: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD) -> "ClassVocabulary":
        """Load ``<stem>.model`` and the ``<stem>.json`` beside it (written by ``save``)."""
        model_path = Path(path).with_suffix(".model")
        record_path = model_path.with_suffix(".json")
        for required in (model_path, record_path):
            if not required.is_file():
                raise FileNotFoundError(f"class vocabulary file {required} not found "
                                        "(build it with python -m generator.build_vocab)")
        proto = model_path.read_bytes()
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{record_path} has format_version {record.get('format_version')}, this code reads "
                             f"{FORMAT_VERSION}; rebuild it")
        if hashlib.sha256(proto).hexdigest() != record["model_sha256"]:
            raise ValueError(f"{model_path} does not match the model_sha256 in {record_path}; rebuild it")
        members = record.get("members") or [[] for _ in record["classes"]]
        if len(members) != len(record["classes"]):
            raise ValueError(f"{record_path} lists members for {len(members)} of {len(record['classes'])} classes")
        classes = [
            ClassEntry(row[0], tuple(row[1:]), tuple(ClassMember(m[1], m[0], tuple(m[2:])) for m in rows))
            for row, rows in zip(record["classes"], members)
        ]
        if classes_digest(classes) != record["classes_sha256"]:
            raise ValueError(f"the class list in {record_path} does not match its classes_sha256")
        if "members" in record and members_digest(classes) != record.get("members_sha256"):
            raise ValueError(f"the members in {record_path} do not match its members_sha256")
        settings = {k: record["settings"][k] for k in ("vocab_size", "max_piece_length")}
        return cls(classes, proto, name=record["name"], settings=VocabSettings(**settings), threshold=threshold)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<stem>.model`` then ``<stem>.json`` atomically; the JSON marks a complete save."""
        if self.settings is None:
            raise ValueError("only vocabularies trained with known VocabSettings can be saved")
        model_path = Path(path).with_suffix(".model")
        record = build_record(self.name, self.classes, self.settings, self.model_proto)
        atomic_write(model_path, lambda tmp: tmp.write_bytes(self.model_proto))
        text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
        atomic_write(model_path.with_suffix(".json"), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return model_path

    # ---------------------------------------------------------------- public queries
    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"ClassVocabulary({self.name!r}, {len(self)} classes, {self._pieces.get_piece_size()} pieces)"

    @property
    def example_prompt(self) -> str:
        """A prompt naming two of these classes, for hints and messages ("a seven and a three")."""
        if self.name in EXAMPLE_PROMPTS:
            return EXAMPLE_PROMPTS[self.name]
        ids = next((pair for pair in EXAMPLE_CLASS_IDS if max(pair) < len(self.classes)), (0,))
        names = dict.fromkeys(self.classes[i].name for i in ids)  # one class: named once
        return " and ".join(f"{'an' if name[:1] in 'aeiou' else 'a'} {name}" for name in names)

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of ``text`` (normalised like a prompt)."""
        return self._pieces.encode(" ".join(tokenize(text)), out_type=str)

    def match(self, prompt: str, top_k: int = 5, threshold: float | None = None) -> list[ClassMatch]:
        """The ``top_k`` classes best matching ``prompt``, best first (score ties: lower class id).

        For a prompt naming several objects a class scores its best match with any of them.
        Raises ``NoMatchError`` when even the best score is below ``threshold`` (default:
        ``self.threshold``; pass 0 to always get candidates), ``PromptError`` for bad input.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        parts = [words for words, _ in self._matcher.mentions(_check_prompt(prompt, self.example_prompt))]
        if not parts:
            raise NoMatchError(prompt, [], threshold, "it has no words that could name a class")
        alias_scores = np.max([self._matcher.alias_scores(words) for words in parts], axis=0)
        best = self._ranked(alias_scores, top_k)
        if best[0].score < threshold:
            raise NoMatchError(prompt, best, threshold)
        return best

    def classes_for_prompt(self, prompt: str, threshold: float | None = None) -> list[int]:
        """One class id per object the prompt mentions, in order, without repeats.

        "a cat and a dog" -> [a cat class, a dog class]. Every part split off by and/or/,/&
        must match (else ``NoMatchError`` naming that part); a part after "with" is added
        only when it clearly names a class (score >= OPTIONAL_THRESHOLD), since it often
        describes rather than names an object; scene after a preposition ("on a table") is
        not an object.
        """
        return [m.class_id for m in self.matches_for_prompt(prompt, threshold)]

    def matches_for_prompt(self, prompt: str, threshold: float | None = None) -> list[ClassMatch]:
        """``classes_for_prompt`` as matches: one per class, in order, each with what it matched.

        Objects that land in one class give one match listing them all: with the emoji
        vocabulary "a cat and a dog" -> [animal-mammal, matched ("cat", "dog")]; its score is
        the lowest of theirs.
        """
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        mentions = self._matcher.mentions(_check_prompt(prompt, self.example_prompt))
        if not mentions:
            raise NoMatchError(prompt, [], threshold, "it has no words that could name a class")
        found: dict[int, ClassMatch] = {}
        for words, optional in mentions:
            alias_scores = self._matcher.alias_scores(words)
            scores = self._matcher.class_best(alias_scores)
            best = int(np.argmax(scores))
            if scores[best] >= (max(threshold, OPTIONAL_THRESHOLD) if optional else threshold):
                match = self._class_match(best, alias_scores, scores[best])
                if best in found:
                    before = found[best]
                    match = ClassMatch(best, match.name, min(before.score, match.score),
                                       dict.fromkeys(before.matched + match.matched))
                found[best] = match
            elif not optional:
                raise NoMatchError(" ".join(words), self._ranked(alias_scores, 5), threshold)
        if not found:
            raise NoMatchError(prompt, self.match(prompt, 5, threshold=0.0), threshold)
        return list(found.values())

    def _class_match(self, class_id: int, alias_scores: np.ndarray, score: float) -> ClassMatch:
        entry = self.classes[class_id]
        matched = [name for i in self._matcher.best_aliases(alias_scores, class_id)
                   for name in entry.matched_names(entry.aliases[i])]
        return ClassMatch(class_id, entry.name, round(float(score), 4), dict.fromkeys(matched))

    def _ranked(self, alias_scores: np.ndarray, top_k: int) -> list[ClassMatch]:
        scores = self._matcher.class_best(alias_scores)
        order = np.lexsort((np.arange(len(scores)), -scores))[:top_k]
        return [self._class_match(int(i), alias_scores, scores[i]) for i in order]


def _check_prompt(prompt: object, example: str) -> str:
    if not isinstance(prompt, str):
        raise PromptError(f"a prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptError(f"the prompt is empty; describe what to generate, e.g. {example!r}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed")
    return prompt


def _check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> ClassVocabulary:
    return ClassVocabulary.load(VOCAB_DIR / f"{name}.model")


def _builtin_for(names: list[str]) -> ClassVocabulary | None:
    """The shipped vocabulary whose class list these names spell, if any."""
    if EMOJI_LEXICON_FILE.exists() and tuple(names) == emoji_class_names():
        return _load_builtin("emoji")
    if len(names) == 10:
        digits = [c.name for c in digits_classes()]
        if names in (digits, [str(d) for d in range(10)]):
            return _load_builtin("digits")
    if len(names) == len(imagenet_wordnet()):
        if names == list(imagenet_wordnet()):
            return _load_builtin("imagenet")
        if (VOCAB_DIR / "imagenet.json").exists() and names == _load_builtin("imagenet").class_names:
            return _load_builtin("imagenet")
    return None
