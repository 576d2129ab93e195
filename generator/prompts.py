"""Free-text prompts -> class ids of a class-conditional generator.

People think in words ("two golden retrievers"), the generator in class ids (207). A
``ClassVocabulary`` holds a class list (a display name and its aliases per class) and a
small sentencepiece unigram model trained on those names by ``python -m generator.build_vocab``.

Matching compares words through their subword pieces, so plurals, partial words and typos
still land: every prompt word is compared with every class word by the IDF-weighted overlap
(Jaccard) of the pieces in their segmentation lattices (an exact whole-word hit scores 1, a
near miss at most SOFT_MATCH_CEILING), and each alias is scored by how much of the alias the prompt covers (recall) and how much of the
prompt the alias explains (precision), words weighted by rarity (IDF). Filler such as
"a photo of" carries no weight. A prompt that names several objects ("a cat and a dog") is
split on "and", "or", "plus", "&", "+", ",", ";" into one class each; a part after "with" is
kept when it clearly names a class and otherwise read as a description ("a car with a roof
rack"); scene after a preposition ("on a table") is not an object.
No class above the threshold raises ``NoMatchError`` naming the closest classes: never a
silent guess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import sentencepiece as spm
from scipy import sparse

from tokenizer.fileio import atomic_write

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
BUILTIN_VOCABULARIES = ("imagenet", "digits")
IMAGENET_WORDNET_FILE = VOCAB_DIR / "imagenet_wordnet.txt"
MAX_PROMPT_CHARS = 1000
FORMAT_VERSION = 1

DEFAULT_THRESHOLD = 0.3
OPTIONAL_THRESHOLD = 0.75  # a part after "with" must clearly name a class to add one
# Hints name classes of the vocabulary at hand: for ImageNet a golden retriever and a tabby cat,
# for digits the README's "a seven and a three"; the first pair that exists is used.
EXAMPLE_CLASS_IDS = ((207, 281), (7, 3), (0, 1))
SOFT_MATCH_CEILING = 0.9  # the best a non-identical word can score: whole-word hits (1) win
RECALL_EXPONENT = 0.7  # score = recall**a * precision**(1-a): naming the class matters most
SECONDARY_ALIAS_FACTOR = 0.9  # a partial match prefers a class's own name to a synonym
HEAD_WORD_WEIGHT = 1.5  # the last word of a name is its head noun: "dog" in "Eskimo dog", not "dog sled"

# Trainer options fixed for reproducibility: one thread and unshuffled input make unigram
# training deterministic, so the shipped models can be rebuilt bit-identically.
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

# Words always dropped, from class names and prompts alike.
_FUNCTION_WORDS = frozenset("a an the of".split())
# Prompt filler: dropped from prompts unless the word is part of a class name of this vocabulary.
_PROMPT_FILLER = frozenset(
    """
    photo photograph picture image img pic snapshot shot closeup close up portrait render rendering
    realistic photorealistic detailed high quality hd 4k 8k beautiful cute nice pretty lovely adorable
    some several many few lot lots one two three four five six seven eight nine ten couple pair group
    my your our his her its their this that these those there here it they i me we you
    is are was be being showing show shows depicting generate create draw make give want see please
    like very just to for
    """.split()
)
_SEPARATORS = frozenset({"and", "or", "plus", ",", ";"})
_OPTIONAL_SEPARATORS = frozenset({"with"})  # "a dog with a tennis ball" / "a dog with long ears"
# A preposition starts the scene around the object ("a violin on a table"): not an object to draw.
_CONTEXT_WORDS = frozenset(
    "on in at under over near by beside behind inside into onto from across through against above below "
    "among around along during while".split()
)
_SYMBOL_WORDS = {"&": "and", "+": "plus"}

_IRREGULAR_SINGULARS = {
    "geese": "goose", "mice": "mouse", "lice": "louse", "oxen": "ox", "teeth": "tooth",
    "feet": "foot", "men": "man", "women": "woman", "children": "child", "people": "person",
    "wolves": "wolf", "knives": "knife", "leaves": "leaf", "loaves": "loaf", "calves": "calf",
    "halves": "half", "shelves": "shelf", "thieves": "thief", "wives": "wife", "dice": "die",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus", "hippopotami": "hippopotamus",
}
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_SYNSET_ID = re.compile(r"^n\d{8}$")
_TOKEN = re.compile(r"[^\W_]+|[,;&+]")


class PromptError(ValueError):
    """The prompt is not a usable string: not a str, empty, or too long."""


class ClassMatch(NamedTuple):
    class_id: int
    name: str
    score: float  # in [0, 1]; 1 = the prompt is exactly a name of the class


class NoMatchError(ValueError):
    """No class scores above the threshold; ``closest`` holds the best candidates anyway."""

    def __init__(self, text: str, closest: Sequence[ClassMatch], threshold: float, reason: str = ""):
        self.text = text
        self.closest = list(closest)
        self.threshold = threshold
        names = ", ".join(f"{m.name!r} ({m.score:.2f})" for m in self.closest) or "none"
        reason = reason or f"no class scores at least {threshold:.2f}"
        super().__init__(f"No class matches {text!r}: {reason}. Closest classes: {names}.")


@dataclass(frozen=True)
class ClassEntry:
    """One class: the name shown to people and every phrase that should find it."""

    name: str
    aliases: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a class name must not be empty")
        if not self.aliases:
            raise ValueError(f"class {self.name!r} needs at least one alias")


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
}


# ------------------------------------------------------------------------- text normalisation
def normalize_text(text: str) -> str:
    """Lower case ASCII-folded text; hyphens, underscores and slashes become spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"['\u2019`]", "", text)  # "devil's" -> "devils", one word
    text = re.sub(r"(?<=\w)\.(?=\w)", "", text)  # "R.V." -> "RV."
    return re.sub(r"[-_/]", " ", text)


def singular(word: str) -> str:
    """English plural -> singular for whole-word hits ("retrievers" -> "retriever")."""
    if word in _IRREGULAR_SINGULARS:
        return _IRREGULAR_SINGULARS[word]
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "os")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Words (singular) and separator symbols of ``text``, in order; function words removed."""
    tokens = [_SYMBOL_WORDS.get(t, t) for t in _TOKEN.findall(normalize_text(text))]
    return [singular(t) for t in tokens if t not in _FUNCTION_WORDS]


def class_words(alias: str) -> tuple[str, ...]:
    """The words of a class alias that take part in matching."""
    return tuple(t for t in tokenize(alias) if t not in (",", ";"))


# ------------------------------------------------------------------------- class lists
def _dedupe(phrases: Iterable[str]) -> tuple[str, ...]:
    seen: dict[tuple[str, ...], str] = {}
    for phrase in phrases:
        phrase = " ".join(phrase.split())
        key = class_words(phrase)
        if phrase and key and key not in seen:
            seen[key] = phrase
    return tuple(seen.values())


@lru_cache(maxsize=1)
def imagenet_wordnet() -> dict[str, tuple[int, tuple[str, ...]]]:
    """The shipped ILSVRC-2012 table: synset id -> (class id, WordNet lemmas)."""
    table: dict[str, tuple[int, tuple[str, ...]]] = {}
    for line in IMAGENET_WORDNET_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        synset, lemmas = line.split("\t")
        table[synset] = (len(table), tuple(s.strip() for s in lemmas.split(",")))
    return table


def imagenet_classes() -> list[ClassEntry]:
    """The 1,000 ImageNet classes: torchvision's (distinct) names + the WordNet synonyms."""
    import torchvision  # only the build command and its test need the names' source

    names = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    lemmas = [lem for _, lem in sorted(imagenet_wordnet().values())]
    if len(names) != len(lemmas):
        raise RuntimeError(f"torchvision lists {len(names)} ImageNet classes, {IMAGENET_WORDNET_FILE} {len(lemmas)}")
    return [ClassEntry(name, _dedupe([name, *lem])) for name, lem in zip(names, lemmas)]


def digits_classes() -> list[ClassEntry]:
    """Digits 0-9: each answers to its numeral and its English word."""
    return [
        ClassEntry(word, _dedupe([word, str(d), f"digit {word}", f"number {d}"]))
        for d, word in enumerate(_NUMBER_WORDS[:10])
    ]


def classes_from_names(
    names: Sequence[str], synset_names: Mapping[str, str | Sequence[str]] | None = None
) -> list[ClassEntry]:
    """Class entries from dataset class names such as ImageFolder folder names.

    "golden_retriever" -> "golden retriever"; "tabby, tabby cat" -> two aliases; a WordNet id
    like "n02099601" -> its names from ``synset_names`` (synset -> "name, synonym, ..." or a
    list) or, failing that, the shipped ImageNet table; a number "7" also answers to "seven".
    """
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of class names, got {names!r}")
    entries = []
    for raw in names:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"class names must be non-empty strings, got {raw!r}")
        raw = raw.strip()
        if _SYNSET_ID.match(raw):
            phrases = _synset_phrases(raw, synset_names)
            entries.append(ClassEntry(phrases[0], _dedupe(phrases)))
            continue
        name = " ".join(raw.replace("_", " ").split())
        phrases = [p for p in name.split(",") if p.strip()]
        if name.isdigit() and int(name) < len(_NUMBER_WORDS):
            phrases.append(_NUMBER_WORDS[int(name)])
        aliases = _dedupe([name, *phrases])
        if not aliases:
            raise ValueError(f"class name {raw!r} has no letters or digits to match a prompt against")
        entries.append(ClassEntry(name, aliases))
    return entries


def _synset_phrases(synset: str, synset_names: Mapping[str, str | Sequence[str]] | None) -> list[str]:
    if synset_names is not None and synset in synset_names:
        value = synset_names[synset]
        phrases = value.split(",") if isinstance(value, str) else list(value)
    elif synset in imagenet_wordnet():
        phrases = list(imagenet_wordnet()[synset][1])
    else:
        raise ValueError(
            f"class folder {synset!r} is a WordNet id not in the ImageNet-1k table; pass "
            "synset_names={synset: 'name, synonym, ...'} (build_vocab: synset_names=<file>)"
        )
    phrases = [p.strip() for p in phrases if p.strip()]
    if not phrases:
        raise ValueError(f"synset_names gives no name for {synset!r}")
    return phrases


def read_synset_names(path: str | os.PathLike) -> dict[str, str]:
    """A mapping file: one "synset<TAB or space>name, synonym, ..." per line (LOC_synset_mapping.txt works)."""
    mapping = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = re.split(r"\t|\s+:?\s*", line.strip(), maxsplit=1)
        if len(parts) != 2 or not _SYNSET_ID.match(parts[0]):
            raise ValueError(f"{path}:{number}: expected 'n01234567<TAB>name, synonym', got {line!r}")
        mapping[parts[0]] = parts[1].lstrip(": ")
    return mapping


# ------------------------------------------------------------------------- training
def classes_digest(classes: Sequence[ClassEntry]) -> str:
    """sha256 of a class list (ids, names, aliases)."""
    payload = json.dumps([[c.name, *c.aliases] for c in classes], ensure_ascii=False, separators=(",", ":"))
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
                lines.append(" ".join([*words[:-1], words[-1] + ("es" if words[-1].endswith(("s", "x", "ch", "sh")) else "s")]))
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
    """The JSON written beside a .model: the class list and everything needed to rebuild it."""
    text = "\n".join(training_sentences(classes))
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "classes_sha256": classes_digest(classes),
        "training_text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "settings": trainer_settings(settings),
        "sentencepiece_version": spm.__version__,
        "model_sha256": hashlib.sha256(model_proto).hexdigest(),
        "classes": [[c.name, *c.aliases] for c in classes],
    }


def _cache_key(classes: Sequence[ClassEntry], settings: VocabSettings) -> str:
    payload = json.dumps([FORMAT_VERSION, classes_digest(classes), trainer_settings(settings)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------- the vocabulary
class ClassVocabulary:
    """A class list + its subword model; maps free-text prompts to class ids.

    Build with ``ClassVocabulary.builtin("imagenet"|"digits")``, ``for_class_names(names,
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
        self._build_index()

    # ---------------------------------------------------------------- constructors
    @classmethod
    def builtin(cls, name: str) -> "ClassVocabulary":
        """The shipped vocabulary "imagenet" (1,000 classes) or "digits" (0-9)."""
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

        The ImageNet and digits class lists (torchvision names, WordNet ids, "0".."9",
        "zero".."nine") give the shipped vocabularies. Others get a subword model trained on
        the fly (about a second), cached as ``class_vocab-<hash>.model/.json`` in ``cache_dir``.
        """
        classes = classes_from_names(names, synset_names)
        builtin = _builtin_for(list(names), classes)
        if builtin is not None:
            return builtin
        settings = VocabSettings.for_classes(classes)
        if cache_dir is None:
            return cls(classes, train_piece_model(classes, settings), settings=settings)
        stem = Path(cache_dir) / f"class_vocab-{_cache_key(classes, settings)}"
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
                raise FileNotFoundError(f"class vocabulary file {required} not found (build it with python -m generator.build_vocab)")
        proto = model_path.read_bytes()
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{record_path} has format_version {record.get('format_version')}, this code reads {FORMAT_VERSION}; rebuild it")
        if hashlib.sha256(proto).hexdigest() != record["model_sha256"]:
            raise ValueError(f"{model_path} does not match the model_sha256 in {record_path}; rebuild it")
        classes = [ClassEntry(row[0], tuple(row[1:])) for row in record["classes"]]
        if classes_digest(classes) != record["classes_sha256"]:
            raise ValueError(f"the class list in {record_path} does not match its classes_sha256")
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
        parts = [words for words, _ in self._mentions(_check_prompt(prompt, self.example_prompt))]
        if not parts:
            raise NoMatchError(prompt, [], threshold, "it has no words that could name a class")
        scores = np.max([self._class_scores(words) for words in parts], axis=0)
        best = self._ranked(scores, top_k)
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
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        mentions = self._mentions(_check_prompt(prompt, self.example_prompt))
        if not mentions:
            raise NoMatchError(prompt, [], threshold, "it has no words that could name a class")
        class_ids: list[int] = []
        for words, optional in mentions:
            scores = self._class_scores(words)
            best = int(np.argmax(scores))
            if scores[best] >= (max(threshold, OPTIONAL_THRESHOLD) if optional else threshold):
                if best not in class_ids:
                    class_ids.append(best)
            elif not optional:
                raise NoMatchError(" ".join(words), self._ranked(scores, 5), threshold)
        if not class_ids:
            raise NoMatchError(prompt, self.match(prompt, 5, threshold=0.0), threshold)
        return class_ids

    # ---------------------------------------------------------------- the index
    def _piece_bag(self, word: str) -> set[int]:
        """Ids of every model piece that spans part of ``word``: the nodes of its segmentation lattice.

        Using the whole lattice, not one segmentation, keeps a misspelt word close to the
        right one: "retreiver" still shares "▁re", "ret", "iver", "ver" with "retriever".
        Single characters (with or without the word-start mark) are left out: they say
        nothing about which word was meant.
        """
        text = "\u2581" + word
        bag = set()
        for start in range(len(text)):
            for stop in range(start + 2 + (start == 0), min(len(text), start + self._max_piece_chars) + 1):
                piece = self._piece_ids.get(text[start:stop])
                if piece is not None:
                    bag.add(piece)
        return bag

    def _piece_matrix(self, words: Sequence[str]) -> sparse.csr_matrix:
        """Which pieces each word's lattice holds, as 0/1: (len(words), num_pieces)."""
        rows, cols = [], []
        for row, word in enumerate(words):
            bag = self._piece_bag(word)
            rows.extend([row] * len(bag))
            cols.extend(bag)
        return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(words), self._pieces.get_piece_size()))

    def _build_index(self) -> None:
        aliases = [(cid, i == 0, class_words(a)) for cid, c in enumerate(self.classes) for i, a in enumerate(c.aliases)]
        aliases = [(cid, primary, words) for cid, primary, words in aliases if words]
        if {cid for cid, _, _ in aliases} != set(range(len(self.classes))):
            raise ValueError("every class needs an alias with at least one word")
        self._words = sorted({w for _, _, words in aliases for w in words})
        self._word_index = {w: i for i, w in enumerate(self._words)}
        class_sets: dict[str, set[int]] = {}
        for cid, _, words in aliases:
            for w in words:
                class_sets.setdefault(w, set()).add(cid)
        num_classes = len(self.classes)
        self._word_idf = np.array([math.log(1 + num_classes / len(class_sets[w])) for w in self._words])

        self._piece_ids = {
            self._pieces.id_to_piece(i): i
            for i in range(self._pieces.get_piece_size())
            if not (self._pieces.is_unknown(i) or self._pieces.is_control(i))
        }
        self._max_piece_chars = max(len(p) for p in self._piece_ids)
        piece_df = np.zeros(self._pieces.get_piece_size())
        for w in self._words:
            for piece in self._piece_bag(w):
                piece_df[piece] += 1
        self._piece_idf = np.log(1 + len(self._words) / (1 + piece_df)) + 1e-3
        word_pieces = self._piece_matrix(self._words)
        self._word_pieces_weighted = (word_pieces @ sparse.diags(self._piece_idf)).T.tocsr()  # (pieces, words)
        self._word_piece_mass = np.asarray(self._word_pieces_weighted.sum(axis=0)).ravel()

        width = max(len(words) for _, _, words in aliases)
        pad = len(self._words)  # index of an all-zero similarity column
        self._alias_words = np.full((len(aliases), width), pad)
        self._alias_weights = np.zeros((len(aliases), width))
        for row, (_, _, words) in enumerate(aliases):
            self._alias_words[row, : len(words)] = [self._word_index[w] for w in words]
            self._alias_weights[row, : len(words)] = self._word_idf[[self._word_index[w] for w in words]]
            self._alias_weights[row, len(words) - 1] *= HEAD_WORD_WEIGHT
        self._alias_factor = np.array([1.0 if primary else SECONDARY_ALIAS_FACTOR for _, primary, _ in aliases])
        self._alias_class = np.array([cid for cid, _, _ in aliases])
        self._class_starts = np.flatnonzero(np.r_[True, np.diff(self._alias_class) != 0])
        splitters = _SEPARATORS | _OPTIONAL_SEPARATORS | _CONTEXT_WORDS
        self._protected = {words for _, _, words in aliases if splitters.intersection(words)}
        self._class_word_set = frozenset(self._words)

    def _word_similarity(self, words: Sequence[str]) -> np.ndarray:
        """Prompt words x class words in [0, 1] (+ a zero pad column): (len(words), num_words + 1)."""
        prompt_pieces = self._piece_matrix(words)
        shared = (prompt_pieces @ self._word_pieces_weighted).toarray()  # IDF mass of common pieces
        prompt_mass = prompt_pieces @ self._piece_idf
        overlap = shared / np.maximum(prompt_mass[:, None] + self._word_piece_mass[None, :] - shared, 1e-9)
        soft = overlap * SOFT_MATCH_CEILING
        for row, word in enumerate(words):
            if word in self._word_index:
                soft[row, self._word_index[word]] = 1.0
        return np.concatenate([soft, np.zeros((len(words), 1))], axis=1)

    def _class_scores(self, words: Sequence[str]) -> np.ndarray:
        """Score in [0, 1] of every class for one mention (a list of prompt words): (num_classes,)."""
        similarity = self._word_similarity(words)
        per_alias = similarity[:, self._alias_words]  # (prompt words, aliases, alias words)
        recall = (per_alias.max(axis=0) * self._alias_weights).sum(1) / self._alias_weights.sum(1)
        best_word = similarity[:, :-1].argmax(axis=1)
        known = similarity[:, :-1].max(axis=1) > 0
        prompt_weights = np.where(known, self._word_idf[best_word], self._word_idf.mean())
        precision = (per_alias.max(axis=2) * prompt_weights[:, None]).sum(0) / prompt_weights.sum()
        alias_scores = recall**RECALL_EXPONENT * precision ** (1 - RECALL_EXPONENT) * self._alias_factor
        return np.maximum.reduceat(alias_scores, self._class_starts)

    def _ranked(self, scores: np.ndarray, top_k: int) -> list[ClassMatch]:
        order = np.lexsort((np.arange(len(scores)), -scores))[:top_k]
        return [ClassMatch(int(i), self.classes[i].name, round(float(scores[i]), 4)) for i in order]

    def _mentions(self, prompt: str) -> list[tuple[list[str], bool]]:
        """Split a prompt into object mentions: (content words, optional), filler removed.

        Parts after and/or/plus/,/; are objects; a part after "with" is optional; a part after
        a preposition ("on a table") is scene, not an object, and is dropped unless nothing else
        is left. Class names that contain such words ("black and gold garden spider") stay whole.
        """
        tokens = tokenize(prompt)
        protected = np.zeros(len(tokens), dtype=bool)
        for phrase in self._protected:
            for start in range(len(tokens) - len(phrase) + 1):
                if tuple(tokens[start : start + len(phrase)]) == phrase:
                    protected[start : start + len(phrase)] = True
        parts: list[tuple[list[str], str]] = []  # (words, "object" | "optional" | "context")
        current: list[str] = []
        kind = "object"
        for token, keep in zip(tokens, protected):
            if keep or token not in _SEPARATORS | _OPTIONAL_SEPARATORS | _CONTEXT_WORDS:
                if token not in (",", ";") and (token in self._class_word_set or token not in _PROMPT_FILLER):
                    current.append(token)
                continue
            parts.append((current, kind))
            current = []
            if token in _SEPARATORS:
                kind = "object"
            elif token in _OPTIONAL_SEPARATORS:
                kind = "optional"
            elif kind == "object":  # a scene after "with" stays optional, after an object it is scene
                kind = "context"
        parts.append((current, kind))
        parts = [(words, kind) for words, kind in parts if words]
        objects = [(words, kind == "optional") for words, kind in parts if kind != "context"]
        return objects or [(words, False) for words, _ in parts]


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


def _builtin_for(names: list[str], classes: Sequence[ClassEntry]) -> ClassVocabulary | None:
    """The shipped vocabulary whose class list these names spell, if any."""
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
