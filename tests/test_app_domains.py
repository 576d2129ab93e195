"""The demo's domain choice (digits | emoji): every tab follows it, a domain loads on first use, a domain
without weights is a clear message, prompts route through the domain's classes; over tiny stand-in models."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app.pipeline as pipeline_module
from app.domains import DEFAULT_DOMAINS, DomainSpec, available_domains, domains_from_mapping
from app.limits import DemoLimits
from app.models import DEFAULT_WEIGHTS_DIR, EXAMPLES_DIR, load_models, status_line
from app.pipeline import DemoPipeline
from app.settings import DemoSettings

from app_helpers import DIGIT_NAMES, MAIN_DECODE, PHOTO_DECODE, free_port, make_demo_weights, tiny_tokenizer_config

REPO = Path(__file__).resolve().parents[1]
EMOJI_DATA = REPO / "data" / "emoji"
EMOJI_DECODE = dict(steps=2, cfg=1.5)  # unlike the digits and photo stand-ins, so a test sees which one decoded
SAMPLER_DECODE = dict(steps=4, cfg=1.0)  # the emoji generation tokenizer's: unlike every other
EMOJI_EXAMPLES = [f"emoji_{n}.png" for n in ("cat", "flag", "heart", "pizza", "rocket", "tiger")]
# The emoji dataset's 74 classes (Unicode subgroups, small ones merged; data/emoji/manifest.json), the list
# the emoji generators carry and the shipped emoji prompt vocabulary is selected by.
EMOJI_NAMES = [
    "face-smiling", "face-affection+cat-face", "face-tongue+face-hat+face-glasses",
    "face-hand+face-sleepy+monkey-face", "face-neutral-skeptical", "face-unwell", "face-concerned",
    "face-negative+face-costume", "heart", "emotion", "hand-fingers-open",
    "hand-fingers-partial+hand-prop+person-resting", "hand-single-finger+hands", "hand-fingers-closed+person-symbol",
    "body-parts", "person", "person-gesture", "person-role", "person-fantasy", "person-activity", "person-sport",
    "family", "animal-mammal", "animal-bird", "animal-amphibian+animal-reptile+animal-marine", "animal-bug",
    "plant-flower", "plant-other", "food-fruit", "food-vegetable", "food-prepared", "food-asian",
    "food-marine+dishware", "food-sweet", "drink", "place-map+place-religious+hotel",
    "place-geographic+transport-water", "place-building", "place-other", "transport-ground", "transport-air", "time",
    "sky & weather", "event", "award-medal+arts & crafts", "sport", "game", "clothing", "sound+medical",
    "music+other-object", "musical-instrument", "phone+lock", "computer", "light & video", "book-paper", "money",
    "mail", "writing+science", "office", "tool", "household", "transport-sign", "warning", "arrow", "religion",
    "zodiac", "av-symbol", "gender+currency+math+punctuation", "other-symbol", "keycap", "alphanum", "geometric",
    "flag+subdivision-flag", "country-flag",
]


def _emoji_vocabulary_shipped() -> bool:
    """Whether generator/prompts ships the emoji vocabulary (chosen by the emoji class list)."""
    try:
        from generator.prompts.classes import emoji_class_names
        from generator.prompts.vocabulary import BUILTIN_VOCABULARIES

        return "emoji" in BUILTIN_VOCABULARIES and list(emoji_class_names()) == EMOJI_NAMES
    except (ImportError, OSError, ValueError):
        return False


needs_emoji_vocabulary = pytest.mark.skipif(not _emoji_vocabulary_shipped(),
                                            reason="the shipped emoji prompt vocabulary is not there")


def make_sampling_tokenizer(tokenizer_dir: Path, out: Path, seed: int = 3, same_encoder: bool = True) -> Path:
    """A tokenizer like the one in ``tokenizer_dir`` with another decoder (and SAMPLER_DECODE): what
    stage=distill toward the teacher's samples makes; with ``same_encoder=False`` one of another encoder."""
    from tokenizer import FlowMo, FlowMoConfig

    teacher = FlowMo.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    student = FlowMo(FlowMoConfig.from_dict({**teacher.config.to_dict(), "decode": dict(SAMPLER_DECODE)}))
    if same_encoder:
        student.encoder.load_state_dict(teacher.encoder.state_dict())
    student.save_pretrained(out)
    return out


def make_emoji_weights(directory: Path, seed: int = 2, classifier: bool = True) -> Path:
    """Write emoji_tokenizer/, emoji_tokenizer_sampling/ (its generation tokenizer), emoji_maskgit/ (no AR:
    the domains differ in their generators too) and emoji_classifier/ as app/weights/ holds them, tiny:
    16 tokens of 6 bits = 16 indices (digits: 32)."""
    from evaluation.feature_classifier import ClassifierConfig, FeatureClassifier
    from generator import GeneratorConfig, MaskGIT
    from tokenizer import FlowMo

    torch.manual_seed(seed)
    config = tiny_tokenizer_config(code_length=8, decode=dict(EMOJI_DECODE))
    FlowMo(config).save_pretrained(directory / "emoji_tokenizer")
    make_sampling_tokenizer(directory / "emoji_tokenizer", directory / "emoji_tokenizer_sampling")
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=config.num_indices, vocab_size=config.vocab_size,
                            num_classes=len(EMOJI_NAMES), class_names=EMOJI_NAMES, width=64, depth=1, num_heads=2,
                            tokenizer_hash=config.architecture_hash())).save_pretrained(directory / "emoji_maskgit")
    if classifier:
        FeatureClassifier(ClassifierConfig(name="emoji", image_size=8, channels=[8], feature_dim=8,
                                           num_classes=len(EMOJI_NAMES), class_names=EMOJI_NAMES)
                          ).save_pretrained(directory / "emoji_classifier")
    return directory


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """Digits (tokenizer, MaskGIT, AR), emoji (tokenizer, MaskGIT, classifier) and the photo tokenizer."""
    return make_emoji_weights(make_demo_weights(tmp_path_factory.mktemp("domain_weights"), photo=True))


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> DemoSettings:
    return DemoSettings(limits=DemoLimits(max_batch=8, max_generator_steps=16, max_decode_steps=20),
                        work_dir=str(tmp_path_factory.mktemp("domain_work")), eval_max_reference_images=40)


@pytest.fixture(scope="module")
def pipeline(weights_dir, settings) -> DemoPipeline:
    return DemoPipeline.load(weights_dir=weights_dir, settings=settings)


# ---------------------------------------------------------------------------- which domains, loading
def test_only_domains_with_weights_are_offered(weights_dir, tmp_path):
    assert available_domains(weights_dir, DEFAULT_DOMAINS) == ["digits", "emoji"]
    digits_only = make_demo_weights(tmp_path / "digits_only")
    assert DemoPipeline.load(weights_dir=digits_only).domains == ["digits"]
    tokenizer_only = make_emoji_weights(make_demo_weights(tmp_path / "no_emoji_generator"))
    shutil.rmtree(tokenizer_only / "emoji_maskgit")
    assert available_domains(tokenizer_only, DEFAULT_DOMAINS) == ["digits"]  # a tokenizer alone is no domain
    # models given by path: no domain choice at all
    assert DemoPipeline(load_models(weights_dir / "tokenizer", photo_tokenizer=False)).domains == []


def test_a_domain_loads_on_first_use_once(weights_dir, settings, monkeypatch):
    calls = []
    real = pipeline_module.load_models
    monkeypatch.setattr(pipeline_module, "load_models", lambda *a, **k: calls.append(k.get("domain")) or real(*a, **k))
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=settings)
    assert calls == [None] and demo.domain == "digits" and demo.domains == ["digits", "emoji"]
    views = []
    threads = [threading.Thread(target=lambda: views.append(demo.view("emoji"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [None, "emoji"]  # three first requests at once, one load
    assert demo.models_for("Emoji") is demo.models_for("emoji") and demo.models_for(None) is demo.models
    # every set shares the one photo tokenizer
    assert demo.models_for("emoji").extra_tokenizers["photos"] is demo.models.extra_tokenizers["photos"]


@pytest.mark.slow
def test_with_compile_on_a_new_domain_answers_at_once_and_compiles_behind(weights_dir, tmp_path):
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=DemoSettings(compile=True, work_dir=str(tmp_path)))
    before = {t for t in threading.enumerate() if t.name == "compile-warm-up"}
    served = demo.generate(["heart"], steps=1, decode_steps=1, domain="emoji")  # the eager models, loaded now
    eager = demo.models_for("emoji")
    warm_ups = [t for t in threading.enumerate() if t.name == "compile-warm-up" and t not in before]
    assert served.labels == ["heart"] and len(warm_ups) == 1
    warm_ups[0].join(timeout=600)
    compiled = demo.models_for("emoji")
    assert compiled is not eager and compiled.class_names == EMOJI_NAMES
    assert compiled.generation_tokenizer is not None and compiled.generation_tokenizer is not eager.generation_tokenizer
    assert demo.generate(["heart"], steps=1, decode_steps=1, domain="emoji").labels == ["heart"]


def test_the_demo_can_open_on_emoji(weights_dir, settings):
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=settings, domain="emoji")
    assert demo.domain == "emoji" and demo.domains == ["digits", "emoji"] and demo.class_names == EMOJI_NAMES
    configured = DemoPipeline.load(weights_dir=weights_dir, settings=DemoSettings(domain="emoji"))
    assert configured.domain == "emoji"


def test_a_missing_or_unknown_domain_is_a_clear_error(weights_dir, tmp_path):
    digits_only = make_demo_weights(tmp_path / "digits_only")
    with pytest.raises(FileNotFoundError, match=r"embedded demo weights not found: .*emoji_tokenizer is missing "
                                                r"\(domain 'emoji' is not available: emoji_tokenizer/ and "
                                                r"emoji_ar/ or emoji_maskgit/ missing in .*available: digits"):
        DemoPipeline.load(weights_dir=digits_only, domain="emoji")
    demo = DemoPipeline.load(weights_dir=digits_only)
    with pytest.raises(ValueError, match="domain 'emoji' is not available: emoji_tokenizer/ and emoji_ar/ or "
                                         "emoji_maskgit/ missing"):
        demo.generate(["heart"], domain="emoji")
    with pytest.raises(ValueError, match=r"unknown domain 'faces'; domains: digits, emoji \(available: digits\)"):
        demo.reconstruct(EXAMPLES_DIR / "digit_3.png", domain="faces")
    checkpoint = DemoPipeline(load_models(weights_dir / "tokenizer", maskgit=weights_dir / "maskgit"))
    with pytest.raises(ValueError, match="domain 'emoji' is not available: this demo serves the models loaded from"):
        checkpoint.generate([1], domain="emoji")
    assert checkpoint.generate([1], steps=1, decode_steps=1).labels == ["one"]  # no domain: its own models


def test_the_model_picker_replaces_the_domains_for_everyone(weights_dir):
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=DemoSettings(model_dirs=(str(weights_dir),)))
    demo.view("emoji")
    demo.reload("emoji_tokenizer", None, "emoji_maskgit", None, weights_dir=weights_dir)  # checkpoints: alone
    assert demo.domains == [] and demo.domain is None and demo.class_names == EMOJI_NAMES
    assert demo.generate(["heart"], steps=1, decode_steps=1).labels == ["heart"]
    with pytest.raises(ValueError, match="domain 'digits' is not available: this demo serves the models loaded"):
        demo.generate(["seven"], domain="digits")
    demo.reload(weights_dir=weights_dir)  # empty paths: the embedded models, with the domain choice again
    assert demo.domains == ["digits", "emoji"] and demo.domain == "digits"
    assert demo.view("emoji").class_names == EMOJI_NAMES and "photos" in demo.models_for("emoji").extra_tokenizers


# ---------------------------------------------------------------------------- every tab follows the domain
def test_switching_domain_switches_classes_generators_tokenizer_and_examples(pipeline):
    digits, emoji = pipeline.view("digits"), pipeline.view("emoji")
    assert (digits.name, digits.label, emoji.name, emoji.label) == ("digits", "Digits", "emoji", "Emoji")
    assert digits.class_names == DIGIT_NAMES and emoji.class_names == EMOJI_NAMES
    assert digits.generator_names == ["MaskGIT", "AR"] and emoji.generator_names == ["MaskGIT"]
    assert [Path(p).name for p in digits.tokenizer.examples] == ["digit_3.png", "digit_7.png"]
    assert [Path(p).name for p in emoji.tokenizer.examples] == EMOJI_EXAMPLES
    assert "digit" in digits.tokenizer.hint and "emoji" in emoji.tokenizer.hint.lower()
    assert (emoji.tokenizer.decode_steps, emoji.tokenizer.decode_cfg) == (EMOJI_DECODE["steps"], EMOJI_DECODE["cfg"])
    assert (digits.tokenizer.num_indices, emoji.tokenizer.num_indices) == (32, 16)
    assert digits.prompts[0] == "a seven and a three" and digits.prompt_hint == "e.g. 'a seven and a three'"
    assert emoji.prompts == ["a cat", "pizza", "rocket", "red heart", "a flag"]
    assert emoji.prompt_hint == "e.g. 'a cat'"
    assert emoji.status.startswith("Emoji models · ") and "Emoji tokenizer" in emoji.status
    assert "16 tokens × vocab 64" in emoji.status and "74 classes" in emoji.status and "AR" not in emoji.status
    assert pipeline.view().name == "digits"  # no domain: the one the demo opened with


def test_generate_uses_the_domains_generator_and_classes(pipeline):
    result = pipeline.generate(["heart", "country-flag"], "MaskGIT", samples_per_class=2, steps=2, seed=1,
                               domain="emoji")
    assert result.labels == ["heart", "heart", "country-flag", "country-flag"]
    assert result.indices.shape == (4, 16) and result.images.shape == (4, 3, 32, 32)
    assert result.class_ids == [8, 8, 73, 73]
    with pytest.raises(ValueError, match="unknown class 'seven'; this model has 74 classes"):
        pipeline.generate(["seven"], domain="emoji")
    with pytest.raises(ValueError, match="generator 'AR' is not loaded; loaded: MaskGIT"):
        pipeline.generate(["heart"], "AR", domain="emoji")
    assert pipeline.generate(["seven"], "AR", steps=1, decode_steps=1, domain="digits").labels == ["seven"]
    assert pipeline.generator_defaults("MaskGIT", "emoji")[0] >= 1


def test_reconstruct_and_token_edits_use_the_domains_tokenizer(pipeline):
    cat = EXAMPLES_DIR / "emoji_cat.png"
    emoji = pipeline.reconstruct(cat, domain="emoji")
    assert emoji.tokenizer == "Emoji tokenizer" and emoji.indices.shape == (1, 16)
    assert (emoji.decode_steps, emoji.decode_cfg) == (EMOJI_DECODE["steps"], EMOJI_DECODE["cfg"])
    assert pipeline.reconstruct(cat, tokenizer="emoji").tokenizer == "Emoji tokenizer"  # by name, any domain
    assert pipeline.reconstruct(cat, tokenizer="Emoji tokenizer", domain="digits").tokenizer == "Emoji tokenizer"
    photo = pipeline.reconstruct(cat, tokenizer="photos", domain="emoji")  # the photo tokenizer stays available
    assert photo.tokenizer == "Photo tokenizer" and (photo.decode_steps, photo.decode_cfg) == (
        PHOTO_DECODE["steps"], PHOTO_DECODE["cfg"])
    digits = pipeline.reconstruct(cat)
    assert digits.tokenizer == "Digits tokenizer" and (digits.decode_steps, digits.decode_cfg) == (
        MAIN_DECODE["steps"], MAIN_DECODE["cfg"])
    assert pipeline.tokenizer_options() == [("Digits tokenizer", "digits"), ("Emoji tokenizer", "emoji"),
                                            ("Photo tokenizer", "photos")]
    with pytest.raises(ValueError, match=r"tokenizer 'faces' is not loaded; loaded: 'digits' \(Digits tokenizer\), "
                                         r"'emoji' \(Emoji tokenizer\), 'photos' \(Photo tokenizer\)"):
        pipeline.reconstruct(cat, tokenizer="faces")
    edited = pipeline.edit_tokens(cat, EXAMPLES_DIR / "emoji_pizza.png", "swap", start=0, end=16, decode_steps=1,
                                  domain="emoji")
    assert edited.indices.shape == (4, 16) and edited.labels[2] == "A + B[0:16]"
    assert torch.allclose(edited.images[2], edited.images[1], atol=1e-5)  # A with all of B's tokens is B
    with pytest.raises(ValueError, match=r"span end must be in \[1, 16\]"):
        pipeline.edit_tokens(cat, cat, "swap", start=0, end=32, domain="emoji")


def test_generated_tokens_decode_through_the_domains_sampling_decoder(pipeline):
    from generator import Pipeline

    models = pipeline.models_for("emoji")
    sampler = models.generation_tokenizer
    assert sampler is not None and models.generation_decoder is sampler
    assert pipeline.models_for("digits").generation_decoder is pipeline.models_for("digits").tokenizer  # names none
    view = pipeline.view("emoji")
    assert (view.generation_decoder.decode_steps, view.generation_decoder.decode_cfg) == tuple(SAMPLER_DECODE.values())
    assert (view.tokenizer.decode_steps, view.tokenizer.decode_cfg) == tuple(EMOJI_DECODE.values())
    assert "emoji_tokenizer_sampling (sampling decoder, 4 network evaluations)" in view.status
    result = pipeline.generate(["heart"], "MaskGIT", samples_per_class=2, steps=2, seed=1, domain="emoji")
    through_sampler = Pipeline(None, sampler).decode(result.indices, seed=1)
    through_tokenizer = Pipeline(None, models.tokenizer).decode(result.indices, seed=1, **SAMPLER_DECODE)
    assert torch.equal(result.images, through_sampler)
    assert not torch.allclose(result.images, through_tokenizer, atol=1e-3)
    assert torch.equal(pipeline.pipeline("MaskGIT", domain="emoji").generate([8, 8], seed=1, num_steps=2).images,
                       result.images)  # the public pipeline the demo hands out decodes the same way
    assert pipeline.reconstruct(EXAMPLES_DIR / "emoji_cat.png", domain="emoji").decode_steps == EMOJI_DECODE["steps"]


def test_a_generation_tokenizer_must_share_the_encoder_and_may_be_absent(tmp_path, settings):
    weights = make_emoji_weights(make_demo_weights(tmp_path / "weights"), classifier=False)
    make_sampling_tokenizer(weights / "emoji_tokenizer", weights / "emoji_tokenizer_sampling", same_encoder=False)
    with pytest.raises(ValueError, match=r"generation tokenizer .*emoji_tokenizer_sampling does not share the "
                                         r"encoder of tokenizer .*emoji_tokenizer, so its decoder reads the tokens "
                                         r"differently"):
        load_models(domain="emoji", weights_dir=weights, settings=settings, photo_tokenizer=False)
    shutil.rmtree(weights / "emoji_tokenizer_sampling")  # not shipped: generated tokens decode through the tokenizer
    models = load_models(domain="emoji", weights_dir=weights, settings=settings, photo_tokenizer=False)
    assert models.generation_tokenizer is None and models.generation_decoder is models.tokenizer
    assert "sampling decoder" not in status_line(models, settings)
    make_sampling_tokenizer(weights / "emoji_tokenizer", tmp_path / "mine")  # a set of checkpoints may name one
    mine = load_models(weights / "emoji_tokenizer", maskgit=weights / "emoji_maskgit", settings=settings,
                       photo_tokenizer=False, generation_tokenizer=tmp_path / "mine")
    assert mine.generation_tokenizer is not None and mine.generation_tokenizer_source == str(tmp_path / "mine")
    assert mine.generation_tokenizer.config.decode.steps == SAMPLER_DECODE["steps"]
    with pytest.warns(UserWarning, match="generation tokenizer .* not loaded: no generator is loaded"):
        alone = load_models(weights / "emoji_tokenizer", settings=settings, photo_tokenizer=False,
                            generation_tokenizer=tmp_path / "mine")
    assert alone.generation_tokenizer is None


# ---------------------------------------------------------------------------- prompts
def test_prompts_route_through_the_domains_class_list(pipeline):
    selection = pipeline.select_prompt("animal mammal and an arrow", domain="emoji")
    assert selection.class_names == ["animal-mammal", "arrow"] and selection.class_ids == [22, 63]
    rows = selection.rows()
    assert [row[0] for row in rows[:2]] == ["animal-mammal", "arrow"] and len(rows) == 5 and len(rows[0]) == 4
    digits = pipeline.select_prompt("a seven and a three")
    assert digits.class_names == ["seven", "three"] and [row[0] for row in digits.rows()[:2]] == ["seven", "three"]
    from generator.prompts import NoMatchError

    with pytest.raises(NoMatchError):
        pipeline.classes_for_prompt("zero", domain="emoji")  # a digit is no emoji class ...
    with pytest.raises(NoMatchError):
        pipeline.classes_for_prompt("animal mammal", domain="digits")  # ... nor an emoji class a digit
    assert pipeline.match_prompt("a seven", top_k=3, domain="digits")[0][:2] == (7, "seven")
    assert pipeline.classes_for_prompt("zero") == [0]  # no domain: the one the demo opened with


def test_example_prompts_are_only_those_the_loaded_classes_answer(weights_dir, tmp_path):
    domains = {**DEFAULT_DOMAINS, "emoji": DomainSpec.from_mapping(
        "emoji", {"prompts": ["qxzvbnm", "animal mammal", "a seven"]}, DEFAULT_DOMAINS["emoji"])}
    demo = DemoPipeline.load(weights_dir=weights_dir, settings=DemoSettings(domains=domains, work_dir=str(tmp_path)))
    assert demo.prompt_examples("emoji")[:1] == ["animal mammal"] and "qxzvbnm" not in demo.prompt_examples("emoji")
    assert demo.view("emoji").prompt_hint == "e.g. 'animal mammal'"


@needs_emoji_vocabulary
@pytest.mark.parametrize("prompt, classes, named", [
    ("a cat", ["animal-mammal"], "cat"),
    ("pizza", ["food-prepared"], "pizza"),
    ("rocket", ["transport-air"], "rocket"),
    ("red heart", ["heart"], "red heart"),
    ("a flag", ["flag+subdivision-flag", "country-flag"], "flag"),
])
def test_emoji_prompts_select_their_class_and_say_which_emoji_matched(pipeline, prompt, classes, named):
    selection = pipeline.select_prompt(prompt, domain="emoji")
    assert len(selection.class_names) == 1 and selection.class_names[0] in classes
    matched = selection.rows()[0][3]
    assert named in matched, f"{prompt!r} matched {matched!r}"
    assert pipeline.prompt_matches(prompt, domain="emoji")[0].class_id == selection.class_ids[0]


@needs_emoji_vocabulary
def test_every_emoji_example_prompt_generates(pipeline):
    for prompt in pipeline.view("emoji").prompts:
        ids = pipeline.classes_for_prompt(prompt, domain="emoji")
        assert pipeline.generate(ids, steps=1, decode_steps=1, domain="emoji").labels == [EMOJI_NAMES[i]
                                                                                             for i in ids]


# ---------------------------------------------------------------------------- Evaluate
def test_evaluation_uses_the_domains_classifier_and_data(pipeline, weights_dir, tmp_path):
    from app.evaluate import _classifier, _reference

    emoji, digits = pipeline.models_for("emoji"), pipeline.models_for("digits")
    assert _classifier(emoji, pipeline.settings) == str(weights_dir / "emoji_classifier")
    plan = pipeline.evaluation_plan("emoji")
    if EMOJI_DATA.is_dir():
        reference = _reference(emoji, pipeline.settings)
        assert reference["name"] == "emoji" and Path(reference["root"]).resolve() == EMOJI_DATA.resolve()
        assert "**emoji classifier features**" in plan and "`val` split of the emoji dataset" in plan
    else:
        assert "python -m imagedata.prepare emoji" in plan
    assert _reference(digits, pipeline.settings) == {"name": "digits"}
    # Without the dataset: a clear message, before any sample is generated.
    domains = {**DEFAULT_DOMAINS, "emoji": DomainSpec.from_mapping(
        "emoji", {"data": {"name": "emoji", "root": str(tmp_path / "no_emoji")}}, DEFAULT_DOMAINS["emoji"])}
    missing = DemoPipeline(pipeline.models, DemoSettings(domains=domains, work_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"gFID for the Emoji models compares with the emoji dataset at .*no_emoji, "
                                         r"which is not there: build it with `python -m imagedata.prepare emoji`"):
        missing.evaluate(10, domain="emoji")
    assert "⚠" in missing.evaluation_plan("emoji") and not (tmp_path / "eval").exists()
    # A domain without its classifier is scored with Inception-v3.
    no_classifier = make_emoji_weights(make_demo_weights(tmp_path / "weights"), classifier=False)
    bare = DemoPipeline.load(weights_dir=no_classifier, settings=DemoSettings(work_dir=str(tmp_path)))
    if not (DEFAULT_WEIGHTS_DIR / "emoji_classifier").is_dir():  # else the shipped one is used
        assert _classifier(bare.models_for("emoji"), bare.settings) is None
        assert "Inception-v3" in bare.evaluation_plan("emoji")


@pytest.mark.slow
@pytest.mark.skipif(not EMOJI_DATA.is_dir(), reason="data/emoji not built (python -m imagedata.prepare emoji)")
def test_evaluate_emoji_in_emoji_classifier_features(pipeline):
    result = pipeline.evaluate(10, "MaskGIT", steps=2, decode_steps=1, domain="emoji")
    rows = dict(result.rows)
    fid = rows["gFID (emoji classifier features)"]
    assert "UNCALIBRATED" not in fid and float(fid.split()[0]) >= 0
    assert "'name': 'emoji'" in rows["reference"] and "split val" in rows["reference"]
    assert "real data" in rows["near-duplicate rate"]


# ---------------------------------------------------------------------------- config and examples
def test_app_config_lists_the_domains_as_the_code_does():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        default = compose(config_name="app")
        cfg = compose(config_name="app", overrides=["domain=emoji", "domains.emoji.label=Emojis"])
    assert default.domain == DemoSettings().domain == "digits"
    assert domains_from_mapping(OmegaConf.to_container(default.domains, resolve=True)) == DEFAULT_DOMAINS
    assert cfg.domain == "emoji"
    domains = domains_from_mapping(OmegaConf.to_container(cfg.domains, resolve=True))
    assert domains["emoji"].label == "Emojis" and domains["digits"] == DEFAULT_DOMAINS["digits"]
    assert domains["emoji"] == DomainSpec.from_mapping("emoji", {"label": "Emojis"}, DEFAULT_DOMAINS["emoji"])
    with pytest.raises(ValueError, match=r"domains.emoji: unknown key\(s\) \['tokeniser'\]"):
        domains_from_mapping({"emoji": {"tokeniser": "x"}})
    with pytest.raises(ValueError, match="a new domain needs at least tokenizer="):
        domains_from_mapping({"faces": {"maskgit": "faces_maskgit"}})
    assert domains_from_mapping({"faces": {"tokenizer": "faces_tokenizer"}})["faces"].label == "Faces"


def _load_make_examples():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES_DIR / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_emoji_examples_are_held_out_images():
    make_examples = _load_make_examples()
    assert sorted(p.name for p in EXAMPLES_DIR.glob("emoji_*.png")) == sorted(f"emoji_{n}.png"
                                                                               for n in make_examples.EMOJI)
    readme = (EXAMPLES_DIR / "README.md").read_text()
    for name in make_examples.EMOJI:
        assert f"`emoji_{name}.png`" in readme
    for licence in ("Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0"):
        assert licence in readme
    if not EMOJI_DATA.is_dir():  # CI builds no dataset: the pixels are checked where it was built
        return
    manifest = json.loads((EMOJI_DATA / "manifest.json").read_text(encoding="utf-8"))
    for name in make_examples.EMOJI:
        record, style = make_examples.emoji_record(manifest, name)  # raises for a training image
        assert f"`{style['name']}/{record['key']}.png`" in readme
        shipped = np.asarray(Image.open(EXAMPLES_DIR / f"emoji_{name}.png").convert("RGB"))
        made = np.asarray(make_examples.emoji_on_white(EMOJI_DATA, name, int(manifest["canvas_side"])))
        assert np.array_equal(shipped, made), name
    with pytest.raises(ValueError, match="only .*'val', 'test_style'"):
        make_examples.EMOJI["training"] = ("noto", next(r["key"] for r in manifest["emoji"] if not r["heldout"]))
        try:
            make_examples.emoji_record(manifest, "training")
        finally:
            del make_examples.EMOJI["training"]


@pytest.mark.skipif("emoji" not in available_domains(DEFAULT_WEIGHTS_DIR, DEFAULT_DOMAINS),
                    reason="emoji weights not shipped yet (app/weights/emoji_tokenizer and a generator)")
def test_shipped_emoji_weights_load_and_fit_together():
    assert DemoPipeline.load().domains == ["digits", "emoji"]  # python -m app offers both
    models = load_models(domain="emoji", photo_tokenizer=False)
    assert models.class_names == EMOJI_NAMES and models.generators and models.domain == "emoji"
    assert models.tokenizer.config.image_size == 32
    assert models.tokenizer.config.code_length * models.tokenizer.config.context_dim == 192
    for model in models.generators.values():
        assert model.config.tokenizer_hash == models.tokenizer.config.architecture_hash()
        assert model.other_tokenizer_warning(models.generation_decoder) is None  # the same tokens
    assert models.generation_tokenizer is not None and models.generation_decoder.config.decode.steps == 4


# ---------------------------------------------------------------------------- the page
def _component(demo, kind: type, label: str):
    found = [block for block in demo.blocks.values() if isinstance(block, kind) and block.label == label]
    assert len(found) == 1, f"{len(found)} {kind.__name__} components labelled {label!r}"
    return found[0]


def test_the_page_offers_the_domains_with_weights(pipeline, tmp_path):
    from app.ui import build_demo

    demo = build_demo(pipeline)
    radio = _component(demo, gr.Radio, "Domain")
    assert radio.choices == [("Digits", "digits"), ("Emoji", "emoji")] and radio.value == "digits" and radio.visible
    tokenizers = _component(demo, gr.Radio, "Tokenizer")
    assert tokenizers.choices == [("Digits tokenizer", "digits"), ("Emoji tokenizer", "emoji"),
                                  ("Photo tokenizer", "photos")] and tokenizers.value == "digits"
    prompts = _component(demo, gr.Dataset, "Example prompts")
    assert prompts.raw_samples[0] == ["a seven and a three"]
    alone = build_demo(DemoPipeline.load(weights_dir=make_demo_weights(tmp_path / "digits_only")))
    assert _component(alone, gr.Radio, "Domain").visible is False  # one domain: nothing to choose


def test_clicking_an_example_prompt_or_pair_fills_the_inputs(pipeline):
    """The example datasets hand their values to the inputs (and an example prompt is matched at once)."""
    import asyncio

    from app.ui import build_demo, launch

    demo = build_demo(pipeline)
    launch(demo, port=free_port(), block=False)
    try:
        def run(name: str, inputs: list):
            fn = next(fn for fn in demo.fns.values() if fn.name == name)
            return asyncio.run(demo.process_api(block_fn=fn, inputs=inputs))["data"]

        prompt, selected, table = run("pick_prompt", [0, "digits"])
        pair = run("pick_pair", [1])
    finally:
        demo.close()
    assert prompt == "a seven and a three" and selected == ["seven", "three"]
    assert [row[0] for row in table["data"][:2]] == ["seven", "three"]
    assert [item["orig_name"] for item in pair] == ["digit_7.png", "digit_3.png"]


@pytest.fixture(scope="module")
def served(pipeline):
    from app.ui import SamplingDefaults, build_demo, launch

    gradio_client = pytest.importorskip("gradio_client")
    demo = build_demo(pipeline, SamplingDefaults(generator_steps=2))
    url = launch(demo, port=free_port(), concurrency=2, block=False)
    client = gradio_client.Client(url, verbose=False)
    yield client
    client.close()
    demo.close()


def _gallery_names(gallery) -> list[str]:
    return [Path(item["image"]).name if isinstance(item["image"], str) else item["image"]["orig_name"]
            for item in gallery]


def _values(outputs) -> list:
    """An event's outputs as values: component updates arrive as {"__type__": "update", "value": ...}."""
    return [o.get("value", o) if isinstance(o, dict) and o.get("__type__") == "update" else o for o in outputs]


def test_switching_domain_in_the_page_updates_every_tab(served):
    out = _values(served.predict("emoji", api_name="/select_domain"))
    status, prompt, prompt_examples, _matches, classes, generator = out[:6]
    assert status.startswith("Emoji models") and "74 classes" in status
    assert classes == ["face-smiling"] and generator == "MaskGIT"
    tokenizer, hint, gallery = out[11:14]
    assert tokenizer == "emoji" and "emoji" in hint.lower() and _gallery_names(gallery) == EMOJI_EXAMPLES
    assert out[14:17] == [EMOJI_DECODE["steps"], EMOJI_DECODE["cfg"], 1]  # Reconstruct's decoder and search
    assert out[9:11] == [SAMPLER_DECODE["steps"], SAMPLER_DECODE["cfg"]]  # Generate's: the sampling decoder's
    assert out[-3:-1] == [SAMPLER_DECODE["steps"], SAMPLER_DECODE["cfg"]]  # Evaluate's
    assert "Samples are scored in" in out[-1] or "⚠" in out[-1]  # Evaluate's plan for emoji
    back = _values(served.predict("digits", api_name="/select_domain"))
    assert back[0].startswith("Digits models") and back[4] == ["zero"] and back[11] == "digits"


def test_requests_follow_the_domain_argument(served):
    import gradio_client

    grid, _tokens, _files, info = served.predict(["heart"], "MaskGIT", 1, 2, 1.0, 1.0, 0, 1, 1.0, "emoji",
                                                 api_name="/generate")
    assert "1 images" in info and Image.open(grid).size[0] >= 128
    with pytest.raises(gradio_client.exceptions.AppError, match="unknown class 'heart'"):
        served.predict(["heart"], "MaskGIT", 1, 2, 1.0, 1.0, 0, 1, 1.0, "digits", api_name="/generate")
    selected, table = served.predict("animal mammal", "emoji", api_name="/match_prompt")
    assert selected == ["animal-mammal"] and table["headers"] == ["class", "id", "score", "matched"]
    _, _, metrics = served.predict(gradio_client.handle_file(str(EXAMPLES_DIR / "emoji_rocket.png")), 1, 1.0, 0,
                                   "emoji", "emoji", api_name="/reconstruct")
    assert dict((row[0], row[1]) for row in metrics["data"])["tokenizer"] == "Emoji tokenizer"
    a = gradio_client.handle_file(str(EXAMPLES_DIR / "emoji_cat.png"))
    b = gradio_client.handle_file(str(EXAMPLES_DIR / "emoji_pizza.png"))
    grid, _ = served.predict(a, b, "swap", 0, 8, 0.25, 0.5, 0, 1, 1.0, "emoji", api_name="/edit_tokens")
    assert Image.open(grid).size[0] > 3 * Image.open(grid).size[1]
    assert served.predict("emoji", api_name="/status").startswith("Emoji models")
    with pytest.raises(gradio_client.exceptions.AppError, match="not in the list of choices"):
        served.predict(["heart"], "MaskGIT", 1, 2, 1.0, 1.0, 0, 1, 1.0, "faces", api_name="/generate")
