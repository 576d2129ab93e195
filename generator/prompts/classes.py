"""Class lists a vocabulary is built from: ImageNet (shipped WordNet table), digits, emoji, dataset class names.

Each class is a ``ClassEntry``: the name shown to people and every phrase that should find it;
a class made of named items (an emoji subgroup and its emoji) also lists them as ``members``, so a
match can say which items the prompt named.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from imagedata import DIGIT_NAMES
from runkit.fileio import atomic_write, file_sha256

from .text import CONTEXT_WORDS, OPTIONAL_SEPARATORS, PROMPT_FILLER, SEPARATORS, class_words

VOCAB_DIR = Path(__file__).resolve().parent.parent / "vocab"
IMAGENET_WORDNET_FILE = VOCAB_DIR / "imagenet_wordnet.txt"
EMOJI_LEXICON_FILE = VOCAB_DIR / "emoji_classes.json"
EMOJI_LEXICON_FORMAT = 1
# A CLDR keyword carried by emoji of more than this many classes ("face", "woman", "bike") is too
# generic to pick one and is left out (measured in tests/test_emoji_prompts.py's module docstring).
EMOJI_KEYWORD_MAX_CLASSES = 2
SPLITTING_WORDS = SEPARATORS | OPTIONAL_SEPARATORS | CONTEXT_WORDS
# A class folder named "7" also answers to "seven"; the digits dataset's names come first.
NUMBER_WORDS = (*DIGIT_NAMES, *"ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
                "nineteen twenty".split())
_SYNSET_ID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ClassMember:
    """A named item of a class (an emoji): its name, its text and the keywords that are aliases of the class."""

    name: str
    text: str = ""
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassEntry:
    """One class: the name shown to people and every phrase that should find it.

    ``members`` (optional) are the named items the class is made of; a matched alias is
    reported as the members it names (``matched_names``).
    """

    name: str
    aliases: tuple[str, ...]
    members: tuple[ClassMember, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a class name must not be empty")
        if not self.aliases:
            raise ValueError(f"class {self.name!r} needs at least one alias")

    def matched_names(self, alias: str) -> tuple[str, ...]:
        """What a matched alias names: the member of that name, else the members with that keyword
        (in member order), else the alias itself."""
        words = class_words(alias)
        named = [m.name for m in self.members if class_words(m.name) == words]
        if not named:
            named = [m.name for m in self.members if any(class_words(k) == words for k in m.keywords)]
        return tuple(named) or (alias,)


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


# ----------------------------------------------------------------------------- emoji
def emoji_lexicon_from_manifest(manifest_path: str | os.PathLike) -> dict:
    """The emoji lexicon of a dataset manifest (``python -m imagedata.prepare emoji``'s manifest.json).

    Per class (manifest order: the generator's class ids) its name, group, Unicode subgroups and
    member emoji {text, name, keywords}, every CLDR keyword kept (``emoji_classes`` chooses); the
    manifest's sha256 and its data sources record where it came from.
    """
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("dataset") != "emoji" or "classes" not in manifest or "emoji" not in manifest:
        raise ValueError(f"{manifest_path} is not an emoji dataset manifest (python -m imagedata.prepare emoji)")
    members: list[list[dict]] = [[] for _ in manifest["classes"]]
    for emoji in manifest["emoji"]:
        members[emoji["class"]].append(
            {"text": emoji["text"], "name": emoji["name"], "keywords": list(emoji.get("keywords", []))}
        )
    classes = []
    for cid, entry in enumerate(manifest["classes"]):
        if entry["id"] != cid:
            raise ValueError(f"{manifest_path}: class {entry['name']!r} has id {entry['id']}, expected {cid}")
        if not members[cid]:
            raise ValueError(f"{manifest_path}: class {entry['name']!r} has no emoji")
        classes.append({"name": entry["name"], "group": entry["group"], "subgroups": list(entry["subgroups"]),
                        "emoji": members[cid]})
    return {
        "format": EMOJI_LEXICON_FORMAT,
        "source": {
            "manifest": "data/emoji/manifest.json",
            "manifest_sha256": file_sha256(manifest_path),
            "data": manifest.get("data", []),
            "command": "python -m generator.build_vocab classes=emoji emoji_manifest=data/emoji/manifest.json",
        },
        "classes": classes,
    }


def format_emoji_lexicon(lexicon: dict) -> str:
    """The lexicon as JSON text, one emoji a line (small diffs when the dataset changes)."""
    def dump(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{", f' "format": {dump(lexicon["format"])},', f' "source": {dump(lexicon["source"])},', ' "classes": [']
    for number, entry in enumerate(lexicon["classes"]):
        head = {k: entry[k] for k in ("name", "group", "subgroups")}
        lines.append(f"  {dump(head)[:-1]}, \"emoji\": [")
        lines.extend(f"   {dump(emoji)}" + ("," if i < len(entry["emoji"]) - 1 else "")
                     for i, emoji in enumerate(entry["emoji"]))
        lines.append("  ]}" + ("," if number < len(lexicon["classes"]) - 1 else ""))
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def write_emoji_lexicon(lexicon: dict, path: str | os.PathLike = EMOJI_LEXICON_FILE) -> Path:
    """Write ``lexicon`` (``format_emoji_lexicon``) atomically; returns the path."""
    path = Path(path)
    text = format_emoji_lexicon(lexicon)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_emoji_lexicon(path: str | os.PathLike = EMOJI_LEXICON_FILE) -> dict:
    """The shipped (or another) emoji lexicon file written by ``format_emoji_lexicon``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"emoji lexicon {path} not found (python -m generator.build_vocab classes=emoji "
                                "emoji_manifest=data/emoji/manifest.json writes it)")
    lexicon = json.loads(path.read_text(encoding="utf-8"))
    if lexicon.get("format") != EMOJI_LEXICON_FORMAT:
        raise ValueError(f"{path} has format {lexicon.get('format')}, this code reads {EMOJI_LEXICON_FORMAT}")
    return lexicon


@lru_cache(maxsize=1)
def emoji_class_names() -> tuple[str, ...]:
    """The emoji dataset's class names in class-id order, from the shipped lexicon."""
    return tuple(entry["name"] for entry in read_emoji_lexicon()["classes"])


def _subgroup_phrases(subgroup: str) -> list[str]:
    """A Unicode subgroup as phrases: "animal-mammal" -> "animal mammal", "sky & weather" -> "sky",
    "weather", "plant-other" -> "plant"."""
    phrases = []
    for part in subgroup.split("&"):
        words = [w for w in part.replace("-", " ").split() if w != "other"]
        if words:
            phrases.append(" ".join(words))
    return phrases


def emoji_classes(lexicon: dict | None = None, *, keywords: bool = True,
                  max_keyword_classes: int = EMOJI_KEYWORD_MAX_CLASSES) -> list[ClassEntry]:
    """The emoji classes for prompts: per class its subgroup names, its emoji's names and chosen CLDR keywords.

    ``lexicon`` defaults to the shipped ``generator/vocab/emoji_classes.json``. Aliases, in
    order: the class's subgroups as phrases ("animal mammal"; the first is the class's primary
    alias), every member emoji's name ("cat", "cat face"), then the CLDR keywords kept. A phrase
    (its words in any order) belongs to one class, by precedence: an emoji's name, then a subgroup
    name, then a keyword, so "hotel" is the class of the 🏨 emoji and not of the "hotel" subgroup
    (bellhop bell, luggage), and "cat" that of the full-body cat, not of the cat faces that carry
    the keyword "cat". A keyword is kept only in the class whose emoji carry it most, only when
    emoji of at most ``max_keyword_classes`` classes carry it ("face", "woman" and "bike" name no
    one class), and never when it holds a prompt filler word ("cute") or only words that split
    prompts ("+" reads "plus", "ON"). ``members`` keep each emoji's text, name and kept
    keywords, so a match can report the emoji it found.
    """
    lexicon = read_emoji_lexicon() if lexicon is None else lexicon
    entries = lexicon["classes"]

    def key(phrase: str) -> tuple[str, ...]:  # word order does not change a score: "face smiling" = "smiling face"
        return tuple(sorted(class_words(phrase)))

    owner: dict[tuple[str, ...], int] = {}  # phrase -> the class that has it as a name or subgroup
    for cid, entry in enumerate(entries):
        for emoji in entry["emoji"]:
            owner.setdefault(key(emoji["name"]), cid)
    for cid, entry in enumerate(entries):
        for subgroup in entry["subgroups"]:
            for phrase in _subgroup_phrases(subgroup):
                owner.setdefault(key(phrase), cid)
    carriers: dict[tuple[str, ...], Counter] = {}  # keyword -> class -> how many of its emoji carry it
    for cid, entry in enumerate(entries):
        for emoji in entry["emoji"]:
            for keyword in dict.fromkeys(map(key, emoji["keywords"])):
                carriers.setdefault(keyword, Counter())[cid] += 1

    def keep_keyword(keyword: str, cid: int) -> bool:
        words = key(keyword)
        if not words or not any(ch.isalpha() for w in words for ch in w) or owner.get(words, cid) != cid:
            return False
        if PROMPT_FILLER.intersection(words):
            return False
        if SPLITTING_WORDS.issuperset(words):  # "+", "ON": words that split prompts name nothing alone
            return False
        counts = carriers[words]
        return counts[cid] == max(counts.values()) and len(counts) <= max_keyword_classes

    classes = []
    for cid, entry in enumerate(entries):
        subgroups = [p for s in entry["subgroups"] for p in _subgroup_phrases(s) if owner[key(p)] == cid]
        members = tuple(
            ClassMember(e["name"], e["text"], tuple(k for k in e["keywords"] if keywords and keep_keyword(k, cid)))
            for e in entry["emoji"]
        )
        phrases = [*subgroups, *(m.name for m in members), *(k for m in members for k in m.keywords)]
        classes.append(ClassEntry(entry["name"], _dedupe(phrases), members))
    return classes
