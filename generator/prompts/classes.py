"""Class lists a vocabulary is built from: ImageNet (shipped WordNet table), digits, dataset class names.

Each class is a ``ClassEntry``: the name shown to people and every phrase that should find it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from imagedata import DIGIT_NAMES

from .text import class_words

VOCAB_DIR = Path(__file__).resolve().parent.parent / "vocab"
IMAGENET_WORDNET_FILE = VOCAB_DIR / "imagenet_wordnet.txt"
# A class folder named "7" also answers to "seven"; the digits dataset's names come first.
NUMBER_WORDS = (*DIGIT_NAMES, *"ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
                "nineteen twenty".split())
_SYNSET_ID = re.compile(r"^n\d{8}$")


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
        for d, word in enumerate(DIGIT_NAMES)
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
        if name.isdigit() and int(name) < len(NUMBER_WORDS):
            phrases.append(NUMBER_WORDS[int(name)])
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
