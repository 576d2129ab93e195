"""Free-text prompts -> class ids of a class-conditional generator.

People think in words ("two golden retrievers"), the generator in class ids (207). A
``ClassVocabulary`` holds a class list (a display name and its aliases per class) and a
small sentencepiece unigram model trained on those names by ``python -m generator.build_vocab``.

Matching compares words through their subword pieces, so plurals, partial words and typos
still land: every prompt word is compared with every class word by the IDF-weighted overlap
(Jaccard) of the pieces in their segmentation lattices (an exact whole-word hit scores 1, a
near miss at most SOFT_MATCH_CEILING), and each alias is scored by how much of the alias the
prompt covers (recall) and how much of the prompt the alias explains (precision), words weighted
by rarity (IDF). Filler such as "a photo of" carries no weight. A prompt that names several
objects ("a cat and a dog") is split on "and", "or", "plus", "&", "+", ",", ";" into one class
each; a part after "with" is kept when it clearly names a class and otherwise read as a
description ("a car with a roof rack"); scene after a preposition ("on a table") is not an object.
No class above the threshold raises ``NoMatchError`` naming the closest classes: never a
silent guess. Every ``ClassMatch`` says what of the class matched (``matched``): for the emoji
vocabulary the emoji names ("a cat and a dog" -> animal-mammal, matched "cat", "dog"; see
``ClassVocabulary.matches_for_prompt``), elsewhere the best alias.

Builtin vocabularies: ``ClassVocabulary.builtin("imagenet" | "digits" | "emoji")``, also chosen
by ``for_class_names`` when a generator's class names are one of those lists. The emoji classes
are the emoji dataset's 74 Unicode-subgroup classes; their aliases come from the shipped lexicon
``generator/vocab/emoji_classes.json`` (emoji names and CLDR keywords), written from
data/emoji/manifest.json by ``python -m generator.build_vocab classes=emoji emoji_manifest=...``.

Modules: :mod:`.text` (normalising and splitting words), :mod:`.classes` (class lists:
ImageNet, digits, emoji, dataset folders), :mod:`.training` (the subword model and its build record),
:mod:`.matcher` (scoring classes against prompt words) and :mod:`.vocabulary` (``ClassVocabulary``).
"""

from .classes import ClassEntry, ClassMember
from .vocabulary import ClassMatch, ClassVocabulary, NoMatchError, PromptError

__all__ = ["ClassEntry", "ClassMatch", "ClassMember", "ClassVocabulary", "NoMatchError", "PromptError"]
