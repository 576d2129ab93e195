"""Free-text prompts for the emoji generators: the shipped emoji lexicon and vocabulary (issue 25).

Everything here runs from the shipped generator/vocab/emoji_classes.json and emoji.{json,model} or
from a small manifest written by the test; data/emoji is needed only by the one test that checks
the shipped lexicon against it (skipped without it).

Keyword choice (generator.prompts.classes.emoji_classes), measured on the 1,870 emoji names as
prompts and 140 hand-written prompts that are not emoji names ("kitten", "a burger", "coffee",
"a plane", ...); "wrapped": those and the 8 required prompts, five ways each ("a photo of {}",
"{} emoji", "a cute {}", "an image of {}", "draw {}"):

    CLDR keywords                              aliases  names      own prompts  wrapped
    none                                        1,959   1868/1870  111/140      595/740
    in every class whose emoji carry them       4,002   1868/1870  124/140      660/740
      ... carried in <= 2 classes               3,657   1868/1870  125/140      665/740
    only in the class most of whose emoji carry it,
      carried in <= 1 class                     3,271   1868/1870  126/140      669/740
      carried in <= 2 classes (shipped)         3,579   1868/1870  128/140      680/740
      carried in <= 3 / 5 / any classes         3,648+  1868/1870  128/140      680/740 (679 any)

The two names that miss: "sparkle" and "sparkles" read alike and sit in two classes; "plus" is a
word that splits prompts. The misses of the own prompts are mostly words CLDR does not have
("kitten", "pony": near spellings win) or gives to another emoji ("plane" is a keyword of the
pilot only). The 8 required prompts below pass in every row.
"""

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

from generator.build_vocab import check_vocabulary, class_source
from generator.prompts import ClassMatch, ClassMember, ClassVocabulary, NoMatchError
from generator.prompts.classes import (EMOJI_LEXICON_FILE, VOCAB_DIR, emoji_class_names, emoji_classes,
                                       emoji_lexicon_from_manifest, format_emoji_lexicon, read_emoji_lexicon)
from generator.prompts.text import class_words
from generator.prompts.training import (BUILTIN_SETTINGS, VocabSettings, classes_digest, members_digest,
                                        train_piece_model, trainer_settings, training_sentences)
from generator.prompts.vocabulary import _builtin_for

ROOT = Path(__file__).resolve().parents[1]
DATA_MANIFEST = ROOT / "data" / "emoji" / "manifest.json"

REQUIRED = [
    ("a cat", "animal-mammal", "cat"),
    ("pizza", "food-prepared", "pizza"),
    ("rocket", "transport-air", "rocket"),
    ("red heart", "heart", "red heart"),
    # A prompt naming no country is the generic flag: the Unicode subgroup named "flag" (chequered,
    # triangular, white, black, rainbow, pirate flags) is in flag+subdivision-flag; country flags
    # are "flag: <country>" and are found by the country ("the flag of france").
    ("a flag", "flag+subdivision-flag", "flag"),
    ("a dog", "animal-mammal", "dog"),
    ("banana", "food-fruit", "banana"),
    ("a car", "transport-ground", "automobile"),
]


@pytest.fixture(scope="module")
def emoji():
    return ClassVocabulary.builtin("emoji")


def class_id(vocab, name):
    return vocab.class_names.index(name)


# ----------------------------------------------------------------------------- the shipped vocabulary
@pytest.mark.parametrize("prompt, expected, emoji_name", REQUIRED)
def test_required_prompts(emoji, prompt, expected, emoji_name):
    best = emoji.match(prompt)[0]
    assert best.name == expected, (prompt, emoji.match(prompt, top_k=3))
    assert emoji_name in best.matched
    assert emoji.classes_for_prompt(prompt) == [class_id(emoji, expected)]
    [found] = emoji.matches_for_prompt(prompt)
    assert (found.name, found.matched) == (best.name, best.matched)


def test_cat_is_the_class_of_the_full_body_cat(emoji):
    best = emoji.match("a cat")[0]
    members = {m.text: m.name for m in emoji.classes[best.class_id].members}
    assert members["\U0001F408"] == "cat"  # 🐈, not the cat faces of face-affection+cat-face
    assert best.matched == ("cat",)
    cat_faces = emoji.classes[class_id(emoji, "face-affection+cat-face")]
    assert "cat" not in cat_faces.aliases  # their CLDR keyword "cat" is the full-body cat's name


def test_flags(emoji):
    assert emoji.match("a flag")[0].score == 1.0  # the subgroup "flag" itself
    for prompt, name in (("the flag of france", "flag: France"), ("germany", "flag: Germany")):
        best = emoji.match(prompt)[0]
        assert (best.name, best.matched) == ("country-flag", (name,)), prompt
    assert emoji.match("a pirate flag")[0].name == "flag+subdivision-flag"


def test_emoji_reached_only_through_a_keyword(emoji):
    names = {word for entry in emoji.classes for m in entry.members for word in class_words(m.name)}
    for prompt, word, expected, emoji_name in [
        ("a frankfurter", "frankfurter", "food-prepared", "hot dog"),
        ("coffee", "coffee", "drink", "hot beverage"),
        ("poop", "poop", "face-negative+face-costume", "pile of poo"),
    ]:
        assert word not in names  # no emoji is called that
        best = emoji.match(prompt)[0]
        assert (best.name, best.matched) == (expected, (emoji_name,)), prompt
    pets = emoji.match("a pet")[0]
    assert pets.name == "animal-mammal" and {"cat", "dog"} <= set(pets.matched)


def test_a_name_beats_a_subgroup_of_that_name(emoji):
    best = emoji.match("a hotel")[0]  # 🏨, not the "hotel" subgroup (bellhop bell, luggage)
    assert (best.name, best.matched) == ("place-building", ("hotel",))


def test_nonsense_raises_no_match_naming_closest_classes(emoji):
    with pytest.raises(NoMatchError) as info:
        emoji.match("qwxz")
    assert info.value.closest and info.value.closest[0].name in str(info.value)
    assert all(m.matched == () for m in info.value.closest if m.score == 0)  # nothing matched, nothing listed
    with pytest.raises(NoMatchError, match="qwxz"):
        emoji.classes_for_prompt("a cat and a qwxz")


def test_several_objects(emoji):
    cat, pizza = class_id(emoji, "animal-mammal"), class_id(emoji, "food-prepared")
    for prompt in ("a cat and pizza", "a cat & a pizza", "cats, pizza", "two cats and a slice of pizza on a table",
                   "a cat plus a pizza"):  # "plus" is also an emoji's name: it still splits
        assert emoji.classes_for_prompt(prompt) == [cat, pizza], prompt
    matches = emoji.matches_for_prompt("a cat and pizza")
    assert [(m.class_id, m.matched) for m in matches] == [(cat, ("cat",)), (pizza, ("pizza",))]
    [both] = emoji.matches_for_prompt("a cat and a dog")  # one class, both named
    assert (both.class_id, both.matched) == (cat, ("cat", "dog"))
    top = emoji.match("a cat and pizza", top_k=2)
    assert {m.class_id for m in top} == {cat, pizza}
    assert emoji.classes_for_prompt(emoji.example_prompt) == [cat, pizza]


def test_names_with_commas_stay_whole(emoji):
    best = emoji.match("family: man, woman, boy")[0]
    assert best.name == "family" and "family: man, woman, boy" in best.matched


def test_filler_and_the_word_emoji_carry_no_weight(emoji):
    for prompt in ("a photo of a cat", "a cat emoji", "a cute cat icon"):
        best = emoji.match(prompt)[0]
        assert (best.name, best.matched, best.score) == ("animal-mammal", ("cat",), 0.9), prompt


def test_generator_class_names_select_the_emoji_vocabulary(emoji):
    names = list(emoji_class_names())
    assert len(names) == 74 and names[22] == "animal-mammal" and names[73] == "country-flag"
    assert _builtin_for(names) is emoji
    assert ClassVocabulary.for_class_names(names) is emoji
    assert emoji.class_names == names
    assert _builtin_for(names[:-1]) is None


# ----------------------------------------------------------------------------- the shipped files
def test_shipped_emoji_vocabulary_is_what_build_vocab_builds(emoji):
    record = json.loads((VOCAB_DIR / "emoji.json").read_text(encoding="utf-8"))
    name, classes, settings = class_source("emoji")
    assert name == "emoji" and settings == BUILTIN_SETTINGS["emoji"]
    assert record["classes_sha256"] == classes_digest(classes)
    assert record["members_sha256"] == members_digest(classes)
    assert record["settings"] == trainer_settings(settings)
    text = "\n".join(training_sentences(classes)).encode()
    assert record["training_text_sha256"] == hashlib.sha256(text).hexdigest()
    assert emoji.classes == tuple(classes)  # members included


@pytest.mark.slow
def test_emoji_model_is_what_build_vocab_writes():
    name, classes, settings = class_source("emoji")
    record = json.loads((VOCAB_DIR / "emoji.json").read_text(encoding="utf-8"))
    if record["sentencepiece_version"] != spm.__version__:
        pytest.skip(f"shipped with sentencepiece {record['sentencepiece_version']}")
    vocab = ClassVocabulary(classes, train_piece_model(classes, settings), name=name, settings=settings)
    assert check_vocabulary(vocab, VOCAB_DIR / "emoji.model") == []


def test_shipped_lexicon():
    lexicon = read_emoji_lexicon()
    source = lexicon["source"]
    assert len(source["manifest_sha256"]) == 64 and "emoji_manifest=" in source["command"]
    assert [c["name"] for c in lexicon["classes"]] == list(emoji_class_names())
    emoji = [e for c in lexicon["classes"] for e in c["emoji"]]
    assert len(emoji) == 1870 and all(e["text"] and e["name"] for e in emoji)
    assert {"text": "\U0001F408", "name": "cat", "keywords": ["cat", "pet"]} in lexicon["classes"][22]["emoji"]
    assert format_emoji_lexicon(lexicon) == EMOJI_LEXICON_FILE.read_text(encoding="utf-8")


@pytest.mark.skipif(not DATA_MANIFEST.is_file(), reason="data/emoji not built (python -m imagedata.prepare emoji)")
def test_shipped_lexicon_is_that_of_the_local_dataset():
    assert emoji_lexicon_from_manifest(DATA_MANIFEST) == read_emoji_lexicon()


# ----------------------------------------------------------------------------- a small manifest
def emoji_record(cid, text, name, subgroup, keywords):
    return {"key": f"{ord(text[0]):x}", "text": text, "name": name, "group": "g", "subgroup": subgroup,
            "class": cid, "heldout": False, "styles": ["noto"], "keywords": keywords}


def small_manifest():
    classes = [("animal-mammal", ["animal-mammal"]), ("face-affection+cat-face", ["face-affection", "cat-face"]),
               ("food-prepared", ["food-prepared"]), ("place-map+hotel", ["place-map", "hotel"]),
               ("place-building", ["place-building"])]
    emoji = [
        emoji_record(0, "\U0001F408", "cat", "animal-mammal", ["cat", "pet"]),
        emoji_record(0, "\U0001F415", "dog", "animal-mammal", ["dog", "pet", "fun"]),
        emoji_record(0, "\U0001F431", "cat face", "animal-mammal", ["cat", "face", "pet"]),
        emoji_record(1, "\U0001F63A", "grinning cat", "cat-face", ["cat", "face", "grinning", "fun"]),
        emoji_record(1, "\U0001F63B", "smiling cat with heart-eyes", "cat-face", ["cat", "face", "heart", "cute"]),
        emoji_record(2, "\U0001F355", "pizza", "food-prepared", ["cheese", "pizza", "slice", "fun"]),
        emoji_record(2, "\U0001F32D", "hot dog", "food-prepared", ["frankfurter", "hotdog", "sausage", "+"]),
        emoji_record(3, "\U0001F6CE", "bellhop bell", "hotel", ["bell", "bellhop", "hotel"]),
        emoji_record(3, "\U0001F5FA", "world map", "place-map", ["map", "world"]),
        emoji_record(4, "\U0001F3E8", "hotel", "place-building", ["building", "hotel"]),
    ]
    classes = [{"id": i, "name": n, "subgroups": s, "group": "g", "size": 2} for i, (n, s) in enumerate(classes)]
    return {"dataset": "emoji", "data": [{"name": "unicode-data", "version": "test"}], "classes": classes,
            "emoji": emoji}


@pytest.fixture
def manifest_path(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(small_manifest(), ensure_ascii=False), encoding="utf-8")
    return path


def test_lexicon_from_a_manifest(manifest_path, tmp_path):
    lexicon = emoji_lexicon_from_manifest(manifest_path)
    assert lexicon["source"]["manifest_sha256"] == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    assert [c["name"] for c in lexicon["classes"]] == [c["name"] for c in small_manifest()["classes"]]
    assert lexicon["classes"][2]["emoji"][1] == {"text": "\U0001F32D", "name": "hot dog",
                                                "keywords": ["frankfurter", "hotdog", "sausage", "+"]}
    (tmp_path / "lexicon.json").write_text(format_emoji_lexicon(lexicon), encoding="utf-8")
    assert read_emoji_lexicon(tmp_path / "lexicon.json") == lexicon
    broken = small_manifest()
    broken["dataset"] = "digits"
    manifest_path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(ValueError, match="not an emoji dataset manifest"):
        emoji_lexicon_from_manifest(manifest_path)


def test_alias_rules(manifest_path):
    mammal, faces, food, hotel_group, building = emoji_classes(emoji_lexicon_from_manifest(manifest_path))
    assert mammal.aliases[:4] == ("animal mammal", "cat", "dog", "cat face")
    assert "pet" in mammal.aliases
    assert "cat" not in faces.aliases  # a name elsewhere
    assert "face" in faces.aliases and "face" not in mammal.aliases  # two cat faces carry it, one mammal
    assert not any("fun" in a for c in (mammal, faces, food) for a in c.aliases)  # three classes carry it
    assert "cute" not in faces.aliases  # prompt filler
    assert "+" not in food.aliases and "sausage" in food.aliases  # "+" reads "plus": it splits prompts
    assert hotel_group.aliases[0] == "place map" and "hotel" not in hotel_group.aliases  # the 🏨 emoji's name
    assert "hotel" in building.aliases
    assert mammal.members[0] == ClassMember("cat", "\U0001F408", ("cat", "pet"))
    assert food.members[1].keywords == ("frankfurter", "hotdog", "sausage")
    assert emoji_classes(emoji_lexicon_from_manifest(manifest_path), keywords=False)[0].aliases == (
        "animal mammal", "cat", "dog", "cat face")


def test_small_vocabulary_reports_matched_emoji_and_saves_members(manifest_path, tmp_path):
    classes = emoji_classes(emoji_lexicon_from_manifest(manifest_path))
    settings = VocabSettings.for_classes(classes)
    vocab = ClassVocabulary(classes, train_piece_model(classes, settings), name="emoji-test", settings=settings)
    assert vocab.match("a cat")[0] == (0, "animal-mammal", 0.9)
    assert vocab.match("a cat")[0].matched == ("cat",)
    assert vocab.match("sausage")[0].matched == ("hot dog",)
    assert vocab.match("a pet")[0].matched == ("cat", "dog", "cat face")
    assert vocab.classes_for_prompt("a hotel") == [4]
    assert [(m.class_id, m.matched) for m in vocab.matches_for_prompt("a cat and a frankfurter")] == [
        (0, ("cat",)), (2, ("hot dog",))]
    loaded = ClassVocabulary.load(vocab.save(tmp_path / "emoji-test.model"))
    assert loaded.classes == vocab.classes
    assert loaded.match("sausage")[0].matched == ("hot dog",)


@pytest.mark.slow
def test_build_vocab_command_writes_lexicon_and_vocabulary(manifest_path, tmp_path):
    out = tmp_path / "out"
    for extra in ([], ["check=true"]):
        result = subprocess.run(
            [sys.executable, "-m", "generator.build_vocab", "classes=emoji", f"emoji_manifest={manifest_path}",
             f"out_dir={out}", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
    assert "identical to a fresh build" in result.stdout
    lexicon = read_emoji_lexicon(out / "emoji_classes.json")
    assert lexicon["source"]["manifest_sha256"] == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    vocab = ClassVocabulary.load(out / "emoji.model")
    assert vocab.classes == tuple(emoji_classes(lexicon))


# ----------------------------------------------------------------------------- ClassMatch
def test_class_match_is_still_a_three_tuple():
    match = ClassMatch(22, "animal-mammal", 0.9, ("cat",))
    class_id_, name, score = match
    assert (class_id_, name, score) == (22, "animal-mammal", 0.9)
    assert match == ClassMatch(22, "animal-mammal", 0.9) and len(match) == 3
    assert match.matched == ("cat",) and ClassMatch(1, "x", 0.5).matched == ()
    assert pickle.loads(pickle.dumps(match)).matched == ("cat",)
    assert "matched=('cat',)" in repr(match)
    assert match._replace(score=1.0).matched == ()
