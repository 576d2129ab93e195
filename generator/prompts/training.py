"""Training the sentencepiece unigram model of a class list, and the record that lets it be rebuilt.

Trainer options are fixed for reproducibility: one thread and unshuffled input make unigram
training deterministic, so the shipped models can be rebuilt bit-identically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Sequence

import sentencepiece as spm

from .classes import ClassEntry
from .text import class_words

FORMAT_VERSION = 1

_TRAINER_OPTIONS = dict(
    model_type="unigram",
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
    character_coverage=1.0,
    normalization_rule_name="identity",  # the text is normalised here, before sentencepiece
    hard_vocab_limit=False,  # small class lists cannot fill a large vocabulary
    bos_id=-1,
    eos_id=-1,
    unk_id=0,
    pad_id=-1,
)


@dataclass(frozen=True)
class VocabSettings:
    """Sentencepiece training settings; part of the build hash of every vocabulary."""

    vocab_size: int = 2000
    max_piece_length: int = 4  # short pieces: a misspelt word still shares most of them

    def __post_init__(self) -> None:
        if self.vocab_size < 16:
            raise ValueError(f"vocab_size must be >= 16, got {self.vocab_size}")
        if not 1 <= self.max_piece_length <= 16:
            raise ValueError(f"max_piece_length must be in 1..16, got {self.max_piece_length}")

    @classmethod
    def for_classes(cls, classes: Sequence[ClassEntry]) -> "VocabSettings":
        """Settings for a dataset's own class list: a vocabulary about as big as its word list."""
        words = {w for entry in classes for alias in entry.aliases for w in class_words(alias)}
        return cls(vocab_size=int(min(2000, max(64, 2 * len(words)))))


BUILTIN_SETTINGS = {
    "imagenet": VocabSettings(vocab_size=2000),
    "digits": VocabSettings(vocab_size=48),
    "emoji": VocabSettings(vocab_size=2000),
}


def classes_digest(classes: Sequence[ClassEntry]) -> str:
    """sha256 of a class list (ids, names, aliases)."""
    payload = json.dumps([[c.name, *c.aliases] for c in classes], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def member_rows(classes: Sequence[ClassEntry]) -> list[list[list[str]]]:
    """Per class its members as ``[text, name, *keywords]`` rows (the record's "members")."""
    return [[[m.text, m.name, *m.keywords] for m in c.members] for c in classes]


def members_digest(classes: Sequence[ClassEntry]) -> str:
    """sha256 of the classes' members (what a match reports; not part of training)."""
    payload = json.dumps(member_rows(classes), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def training_sentences(classes: Sequence[ClassEntry]) -> list[str]:
    """Deterministic sentencepiece training text: every alias, its plural, and its words.

    Class lists are short; repeating the words on their own lines gives the unigram model
    the word frequencies it needs to prefer whole words and common stems as pieces.
    """
    lines = []
    for entry in classes:
        for alias in entry.aliases:
            words = class_words(alias)
            lines.append(" ".join(words))
            if words[-1].isalpha():
                plural = words[-1] + ("es" if words[-1].endswith(("s", "x", "ch", "sh")) else "s")
                lines.append(" ".join([*words[:-1], plural]))
            lines.extend(words)
    return lines


def trainer_settings(settings: VocabSettings) -> dict:
    return {**_TRAINER_OPTIONS, **dataclasses.asdict(settings)}


def train_piece_model(classes: Sequence[ClassEntry], settings: VocabSettings) -> bytes:
    """Train the sentencepiece unigram model on the class names; returns the serialized model."""
    sentences = training_sentences(classes)
    required = len({ch for line in sentences for ch in line.replace(" ", "")}) + 4
    options = trainer_settings(settings)
    options["max_sentencepiece_length"] = options.pop("max_piece_length")
    options["vocab_size"] = max(options["vocab_size"], required)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, minloglevel=2, **options)
    return model.getvalue()


def build_record(name: str, classes: Sequence[ClassEntry], settings: VocabSettings, model_proto: bytes) -> dict:
    """The JSON written beside a .model: the class list and everything needed to rebuild it.

    Classes with members (emoji) add "members" (per class ``[text, name, *keywords]`` rows) and
    "members_sha256"; the model and classes_sha256 do not depend on them.
    """
    text = "\n".join(training_sentences(classes))
    record = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "classes_sha256": classes_digest(classes),
        "training_text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "settings": trainer_settings(settings),
        "sentencepiece_version": spm.__version__,
        "model_sha256": hashlib.sha256(model_proto).hexdigest(),
        "classes": [[c.name, *c.aliases] for c in classes],
    }
    if any(c.members for c in classes):
        record["members_sha256"] = members_digest(classes)
        record["members"] = member_rows(classes)
    return record


def cache_key(classes: Sequence[ClassEntry], settings: VocabSettings) -> str:
    """A short hash naming the cached vocabulary of a class list built with ``settings``."""
    payload = json.dumps([FORMAT_VERSION, classes_digest(classes), trainer_settings(settings)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
