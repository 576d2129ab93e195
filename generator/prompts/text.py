"""Prompt and class-name text as words: normalisation, singular forms, and the word lists matching reads."""

from __future__ import annotations

import re
import unicodedata

# Words always dropped, from class names and prompts alike.
_FUNCTION_WORDS = frozenset("a an the of".split())
# Prompt filler: dropped from prompts unless the word is part of a class name of this vocabulary.
PROMPT_FILLER = frozenset(
    """
    photo photograph picture image img pic snapshot shot closeup close up portrait render rendering
    realistic photorealistic detailed high quality hd 4k 8k beautiful cute nice pretty lovely adorable
    some several many few lot lots one two three four five six seven eight nine ten couple pair group
    my your our his her its their this that these those there here it they i me we you
    is are was be being showing show shows depicting generate create draw make give want see please
    like very just to for
    emoji emoticon icon sticker
    """.split()
)
SEPARATORS = frozenset({"and", "or", "plus", ",", ";"})
OPTIONAL_SEPARATORS = frozenset({"with"})  # "a dog with a tennis ball" / "a dog with long ears"
# A preposition starts the scene around the object ("a violin on a table"): not an object to draw.
CONTEXT_WORDS = frozenset(
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
_TOKEN = re.compile(r"[^\W_]+|[,;&+]")


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
