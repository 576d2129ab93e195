"""Scoring classes against prompt words through the subword pieces of a vocabulary's model.

A word is the set of model pieces in its segmentation lattice; two words are as similar as the
IDF-weighted overlap (Jaccard) of those sets, and an alias is scored by recall (how much of the
alias the prompt covers) and precision (how much of the prompt the alias explains).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import sentencepiece as spm
from scipy import sparse

from .classes import ClassEntry
from .text import CONTEXT_WORDS, OPTIONAL_SEPARATORS, PROMPT_FILLER, SEPARATORS, class_words, tokenize

SOFT_MATCH_CEILING = 0.9  # the best a non-identical word can score: whole-word hits (1) win
RECALL_EXPONENT = 0.7  # score = recall**a * precision**(1-a): naming the class matters most
SECONDARY_ALIAS_FACTOR = 0.9  # a partial match prefers a class's own name to a synonym
HEAD_WORD_WEIGHT = 1.5  # the last word of a name is its head noun: "dog" in "Eskimo dog", not "dog sled"


class ClassMatcher:
    """The piece index of a class list: every class scored against the words of one object mention."""

    def __init__(self, classes: Sequence[ClassEntry], pieces: spm.SentencePieceProcessor):
        self._pieces = pieces
        aliases = [(cid, i, class_words(a)) for cid, c in enumerate(classes) for i, a in enumerate(c.aliases)]
        aliases = [(cid, i, words) for cid, i, words in aliases if words]
        self._alias_index = np.array([i for _, i, _ in aliases])  # which alias of its class each row is
        aliases = [(cid, i == 0, words) for cid, i, words in aliases]
        if {cid for cid, _, _ in aliases} != set(range(len(classes))):
            raise ValueError("every class needs an alias with at least one word")
        self._words = sorted({w for _, _, words in aliases for w in words})
        self._word_index = {w: i for i, w in enumerate(self._words)}
        class_sets: dict[str, set[int]] = {}
        for cid, _, words in aliases:
            for w in words:
                class_sets.setdefault(w, set()).add(cid)
        num_classes = len(classes)
        self._word_idf = np.array([math.log(1 + num_classes / len(class_sets[w])) for w in self._words])

        self._piece_ids = {
            pieces.id_to_piece(i): i
            for i in range(pieces.get_piece_size())
            if not (pieces.is_unknown(i) or pieces.is_control(i))
        }
        self._max_piece_chars = max(len(p) for p in self._piece_ids)
        piece_df = np.zeros(pieces.get_piece_size())
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
        splitters = SEPARATORS | OPTIONAL_SEPARATORS | CONTEXT_WORDS
        phrases = {tuple(tokenize(alias)) for c in classes for alias in c.aliases}  # with "," and ";"
        self._protected = {  # a name that is only a splitter ("plus") does not stop "a cat plus a dog" splitting
            tokens for tokens in phrases
            if splitters.intersection(tokens) and not splitters.union((",", ";")).issuperset(tokens)
        }
        self._class_word_set = frozenset(self._words)

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
        shape = (len(words), self._pieces.get_piece_size())
        return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)

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

    def class_scores(self, words: Sequence[str]) -> np.ndarray:
        """Score in [0, 1] of every class for one mention (a list of prompt words): (num_classes,)."""
        return self.class_best(self.alias_scores(words))

    def class_best(self, alias_scores: np.ndarray) -> np.ndarray:
        """Per class the best of its aliases' scores: (num_classes,)."""
        return np.maximum.reduceat(alias_scores, self._class_starts)

    def best_aliases(self, alias_scores: np.ndarray, class_id: int) -> list[int]:
        """Which aliases of class ``class_id`` (indices into its ``aliases``) reach its best score, in order;
        none when nothing of the prompt matches the class at all (score 0)."""
        start = self._class_starts[class_id]
        stop = self._class_starts[class_id + 1] if class_id + 1 < len(self._class_starts) else len(alias_scores)
        scores = alias_scores[start:stop]
        if scores.max() <= 0:
            return []
        return [int(i) for i in self._alias_index[start:stop][scores >= scores.max() - 1e-9]]

    def alias_scores(self, words: Sequence[str]) -> np.ndarray:
        """Score in [0, 1] of every alias (that has words) for one mention, class by class: (num_aliases,)."""
        similarity = self._word_similarity(words)
        per_alias = similarity[:, self._alias_words]  # (prompt words, aliases, alias words)
        recall = (per_alias.max(axis=0) * self._alias_weights).sum(1) / self._alias_weights.sum(1)
        best_word = similarity[:, :-1].argmax(axis=1)
        known = similarity[:, :-1].max(axis=1) > 0
        prompt_weights = np.where(known, self._word_idf[best_word], self._word_idf.mean())
        precision = (per_alias.max(axis=2) * prompt_weights[:, None]).sum(0) / prompt_weights.sum()
        return recall**RECALL_EXPONENT * precision ** (1 - RECALL_EXPONENT) * self._alias_factor

    def mentions(self, prompt: str) -> list[tuple[list[str], bool]]:
        """Split a prompt into object mentions: (content words, optional), filler removed.

        Parts after and/or/plus/,/; are objects; a part after "with" is optional; a part after
        a preposition ("on a table") is scene, not an object, and is dropped unless nothing else
        is left. Class names that contain such words or commas ("black and gold garden spider",
        "family: man, woman, boy") stay whole; a name that is only such a word ("plus") does not.
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
            if keep or token not in SEPARATORS | OPTIONAL_SEPARATORS | CONTEXT_WORDS:
                if token not in (",", ";") and (token in self._class_word_set or token not in PROMPT_FILLER):
                    current.append(token)
                continue
            parts.append((current, kind))
            current = []
            if token in SEPARATORS:
                kind = "object"
            elif token in OPTIONAL_SEPARATORS:
                kind = "optional"
            elif kind == "object":  # a scene after "with" stays optional, after an object it is scene
                kind = "context"
        parts.append((current, kind))
        parts = [(words, kind) for words, kind in parts if words]
        objects = [(words, kind == "optional") for words, kind in parts if kind != "context"]
        return objects or [(words, False) for words, _ in parts]
