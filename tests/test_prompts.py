"""Free-text prompts -> class ids (generator/prompts/) and the vocabulary build command."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

import generator.prompts.vocabulary as vocabulary
from generator.build_vocab import check_vocabulary, class_source, folder_class_names
from generator.prompts import ClassMatch, ClassVocabulary, NoMatchError, PromptError
from generator.prompts.classes import VOCAB_DIR, classes_from_names, digits_classes, imagenet_classes, imagenet_wordnet
from generator.prompts.training import (BUILTIN_SETTINGS, classes_digest, train_piece_model, trainer_settings,
                                        training_sentences)

ROOT = Path(__file__).resolve().parents[1]
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
DOG_CLASSES = range(151, 269)


@pytest.fixture(scope="module")
def imagenet():
    return ClassVocabulary.builtin("imagenet")


@pytest.fixture(scope="module")
def digits():
    return ClassVocabulary.builtin("digits")


# ----------------------------------------------------------------------------- matching
def test_exact_name_ranks_first(imagenet):
    best = imagenet.match("golden retriever")
    assert best[0] == ClassMatch(207, "golden retriever", 1.0)
    assert [m.score for m in best] == sorted((m.score for m in best), reverse=True)


def test_typos_plurals_and_filler_still_find_the_class(imagenet):
    assert 207 in [m.class_id for m in imagenet.match("goldn retreiver", top_k=3)]
    assert imagenet.match("two golden retrievers playing")[0].class_id == 207
    assert imagenet.match("an ambulence")[0].class_id == 407


def test_photo_of_filler_carries_no_weight(imagenet):
    best = imagenet.match("a photo of a tabby cat")[0]
    assert (best.class_id, best.name) == (281, "tabby")
    assert imagenet.match("tabby cat")[0].score == best.score


def test_synonyms_from_wordnet(imagenet):
    assert imagenet.match("mountain lion")[0].class_id == 286  # cougar
    assert imagenet.match("polar bear")[0].class_id == 296  # ice bear


def test_repeated_names_keep_distinct_ids(imagenet):
    assert imagenet.class_names[134] != imagenet.class_names[517]  # the two "crane"s
    assert len(set(imagenet.class_names)) == 1000


def test_digits_by_word_and_numeral(digits):
    for prompt in ("seven", "7", "a handwritten 7", "sevens", "the digit seven"):
        assert digits.match(prompt)[0].class_id == 7, prompt
    assert digits.classes_for_prompt("a 3 and a nine") == [3, 9]


def test_nonsense_raises_no_match_with_closest_names(imagenet):
    with pytest.raises(NoMatchError) as info:
        imagenet.match("qwxz zzkp vvbnm")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.closest and all(isinstance(m, ClassMatch) for m in error.closest)
    assert error.closest[0].name in str(error)
    with pytest.raises(NoMatchError):
        imagenet.classes_for_prompt("xqzvbl")
    assert imagenet.match("qwxz zzkp vvbnm", threshold=0.0)  # candidates on request


def test_prompt_with_only_filler_names_nothing(imagenet):
    with pytest.raises(NoMatchError, match="no words"):
        imagenet.classes_for_prompt("a photo of")


@pytest.mark.parametrize("bad", ["", "   \n", "x" * 1001, None, 7, b"cat", ["cat"]])
def test_bad_prompts_raise_prompt_error(imagenet, bad):
    with pytest.raises(PromptError):
        imagenet.match(bad)
    with pytest.raises(PromptError):
        imagenet.classes_for_prompt(bad)


def test_bad_arguments(imagenet):
    with pytest.raises(ValueError, match="top_k"):
        imagenet.match("cat", top_k=0)
    with pytest.raises(ValueError, match="threshold"):
        imagenet.match("cat", threshold=1.5)
    with pytest.raises(ValueError, match="unknown builtin"):
        ClassVocabulary.builtin("cifar")


# ----------------------------------------------------------------------------- several objects
def test_cat_and_dog_give_two_classes(imagenet):
    for prompt in ("a cat and a dog", "a cat & a dog", "cats, dogs"):
        cat, dog = imagenet.classes_for_prompt(prompt)
        assert cat in CAT_CLASSES and dog in DOG_CLASSES, prompt


def test_names_containing_and_stay_whole(imagenet):
    assert imagenet.classes_for_prompt("a black and gold garden spider") == [72]
    assert imagenet.classes_for_prompt("black and gold garden spider and a goldfish") == [72, 1]


def test_with_adds_a_class_only_when_it_names_one(imagenet):
    assert imagenet.classes_for_prompt("a red sports car with a roof rack") == [817]
    dog, ball = imagenet.classes_for_prompt("a dog with a tennis ball")
    assert dog in DOG_CLASSES and ball == 852


def test_scene_after_preposition_is_not_an_object(imagenet):
    assert imagenet.classes_for_prompt("a violin on a table") == [889]
    assert imagenet.match("a violn on a dining table")[0].class_id == 889


def test_every_object_must_match(imagenet):
    with pytest.raises(NoMatchError, match="xqzvbl"):
        imagenet.classes_for_prompt("a golden retriever and a xqzvbl")


def test_repeated_objects_give_one_class(imagenet):
    assert imagenet.classes_for_prompt("a tabby and another tabby") == [281]


def test_matches_say_which_alias_matched(imagenet):
    best = imagenet.match("a photo of a tabby cat")[0]
    assert best == (281, "tabby", 0.9) and best.matched == ("tabby cat",)
    assert imagenet.match("mountain lion")[0].matched == ("mountain lion",)
    matches = imagenet.matches_for_prompt("a golden retriever and a violin on a table")
    assert [(m.class_id, m.matched) for m in matches] == [(207, ("golden retriever",)), (889, ("violin",))]
    assert [m.class_id for m in matches] == imagenet.classes_for_prompt("a golden retriever and a violin")


# ----------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize(
    "name, build",
    [pytest.param("imagenet", imagenet_classes, marks=pytest.mark.slow), ("digits", digits_classes)],
)
def test_shipped_vocabulary_matches_the_current_command(name, build):
    record = json.loads((VOCAB_DIR / f"{name}.json").read_text())
    classes = build()
    assert record["classes_sha256"] == classes_digest(classes)
    assert record["settings"] == trainer_settings(BUILTIN_SETTINGS[name])
    text = "\n".join(training_sentences(classes)).encode()
    assert record["training_text_sha256"] == hashlib.sha256(text).hexdigest()
    vocab = ClassVocabulary.builtin(name)
    assert vocab.class_names == [c.name for c in classes]


def test_retraining_is_deterministic_and_reproduces_digits():
    classes = digits_classes()
    first = train_piece_model(classes, BUILTIN_SETTINGS["digits"])
    assert first == train_piece_model(classes, BUILTIN_SETTINGS["digits"])
    record = json.loads((VOCAB_DIR / "digits.json").read_text())
    if record["sentencepiece_version"] != spm.__version__:
        pytest.skip(f"shipped with sentencepiece {record['sentencepiece_version']}")
    assert first == (VOCAB_DIR / "digits.model").read_bytes()


@pytest.mark.slow
def test_imagenet_model_is_what_build_vocab_writes():
    name, classes, settings = class_source("imagenet")
    record = json.loads((VOCAB_DIR / "imagenet.json").read_text())
    if record["sentencepiece_version"] != spm.__version__:
        pytest.skip(f"shipped with sentencepiece {record['sentencepiece_version']}")
    vocab = ClassVocabulary(classes, train_piece_model(classes, settings), name=name, settings=settings)
    assert check_vocabulary(vocab, VOCAB_DIR / "imagenet.model") == []


def test_load_rejects_a_tampered_model(tmp_path):
    for suffix in (".model", ".json"):
        (tmp_path / f"digits{suffix}").write_bytes((VOCAB_DIR / f"digits{suffix}").read_bytes())
    assert ClassVocabulary.load(tmp_path / "digits.model").num_classes == 10
    (tmp_path / "digits.model").write_bytes((VOCAB_DIR / "digits.model").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="model_sha256"):
        ClassVocabulary.load(tmp_path / "digits.model")
    with pytest.raises(FileNotFoundError, match="build_vocab"):
        ClassVocabulary.load(tmp_path / "missing.model")


# ----------------------------------------------------------------------------- dataset vocabularies
FOLDERS = ["golden_retriever", "n02123045", "sports car", "pizza, pizza pie", "7"]


def test_class_names_from_folders():
    entries = classes_from_names(FOLDERS)
    assert [e.name for e in entries] == ["golden retriever", "tabby", "sports car", "pizza, pizza pie", "7"]
    assert "tabby cat" in entries[1].aliases
    assert "pizza pie" in entries[3].aliases
    assert "seven" in entries[4].aliases
    with pytest.raises(ValueError, match="synset_names"):
        classes_from_names(["n99999999"])
    assert classes_from_names(["n99999999"], {"n99999999": "quokka, short-tailed scrub wallaby"})[0].name == "quokka"
    with pytest.raises(ValueError, match="non-empty"):
        classes_from_names(["cat", ""])


def test_dataset_vocabulary_is_cached_and_reused(tmp_path, monkeypatch):
    vocab = ClassVocabulary.for_class_names(FOLDERS, cache_dir=tmp_path)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".model"]
    assert vocab.classes_for_prompt("two goldn retrievers and a pizza") == [0, 3]
    assert vocab.match("seven")[0].class_id == 4

    def no_training(*args, **kwargs):
        raise AssertionError("the cached vocabulary should have been reused")

    monkeypatch.setattr(vocabulary, "train_piece_model", no_training)
    again = ClassVocabulary.for_class_names(FOLDERS, cache_dir=tmp_path)
    assert again.class_names == vocab.class_names
    assert again.model_proto == vocab.model_proto
    with pytest.raises(AssertionError, match="cached"):
        ClassVocabulary.for_class_names(FOLDERS[:-1], cache_dir=tmp_path)  # another list, another model


def test_known_class_lists_use_the_shipped_vocabularies(imagenet, digits):
    assert ClassVocabulary.for_class_names([str(d) for d in range(10)]) is digits
    assert ClassVocabulary.for_class_names(imagenet.class_names) is imagenet
    assert ClassVocabulary.for_class_names(list(imagenet_wordnet())) is imagenet


def test_folder_source(tmp_path):
    for name in ("b_dog", "a_cat", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a class")
    assert folder_class_names(tmp_path) == ["a_cat", "b_dog"]
    name, classes, _ = class_source(f"folder:{tmp_path}")
    assert name == "folder" and [c.name for c in classes] == ["a cat", "b dog"]
    with pytest.raises(ValueError, match="imagenet, digits or folder"):
        class_source("cifar10")


@pytest.mark.slow
def test_build_vocab_command_checks_digits():
    result = subprocess.run(
        [sys.executable, "-m", "generator.build_vocab", "classes=digits", "check=true",
         "hydra.run.dir=${oc.env:TMPDIR,/tmp}/bv"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "identical to a fresh build" in result.stdout
