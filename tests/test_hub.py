"""Every network on huggingface_hub's ModelHubMixin: bit-equal round trips, the shipped folders, model cards,
Hub repo ids read from the local cache offline, clear errors without network, and push_to_hub's upload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evaluation.feature_classifier import ClassifierConfig, FeatureClassifier
from generator import ARTransformer, GeneratorConfig, MaskGIT
from generator.base import GeneratorModel
from runkit.pretrained import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, hub_repo_id
from tokenizer import FlowMo, FlowMoConfig

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "app" / "weights"
TOKENIZER = FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=6, lfq_bits=2, enc_width=1 / 3,
                         dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2, decode={"steps": 2, "cfg": 1.0})


def generator_config(kind: str) -> GeneratorConfig:
    return GeneratorConfig(model=kind, seq_len=TOKENIZER.num_indices, vocab_size=TOKENIZER.vocab_size, num_classes=3,
                           class_names=["red", "green", "blue"], width=32, depth=1, num_heads=2,
                           tokenizer_hash=TOKENIZER.architecture_hash())


def tokenizer_outputs(model: FlowMo) -> tuple[torch.Tensor, ...]:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    indices = model.tokenize(images)
    return indices, model.decode(indices, noise=noise)


def generator_outputs(model: GeneratorModel) -> tuple[torch.Tensor, ...]:
    return (model.generate([0, 2], generator=torch.Generator().manual_seed(3)),)


def classifier_outputs(model: FeatureClassifier) -> tuple[torch.Tensor, ...]:
    return model.features_and_logits(torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(4)) * 2 - 1)


# kind -> (the class to load with, a fresh model, what it computes)
MODELS = {
    "tokenizer": (FlowMo, lambda: FlowMo(TOKENIZER), tokenizer_outputs),
    "maskgit": (GeneratorModel, lambda: MaskGIT(generator_config("maskgit")), generator_outputs),
    "ar": (GeneratorModel, lambda: ARTransformer(generator_config("ar")), generator_outputs),
    "classifier": (FeatureClassifier, lambda: FeatureClassifier(ClassifierConfig(
        name="shapes", image_size=8, channels=[8], feature_dim=8, num_classes=3)), classifier_outputs),
}


def fresh(kind: str):
    torch.manual_seed(0)
    return MODELS[kind][1]().eval()


def hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """``folder`` laid out as huggingface_hub caches a downloaded repo (refs/main -> snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


@pytest.mark.parametrize("kind", list(MODELS))
def test_save_pretrained_then_from_pretrained_gives_bit_equal_outputs(kind, tmp_path):
    loader, _, outputs = MODELS[kind]
    model = fresh(kind)
    model.save_pretrained(tmp_path / kind)
    assert sorted(p.name for p in (tmp_path / kind).iterdir()) == [CARD_FILE, CONFIG_FILE, WEIGHTS_FILE]
    loaded = loader.from_pretrained(tmp_path / kind).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        for mine, theirs in zip(outputs(model), outputs(loaded), strict=True):
            assert torch.equal(mine, theirs)


@pytest.mark.parametrize("kind", list(MODELS))
def test_offline_a_repo_id_loads_from_the_hub_cache_and_a_folder_from_disk(kind, tmp_path, monkeypatch):
    from huggingface_hub import constants

    loader, _, outputs = MODELS[kind]
    model = fresh(kind)
    model.save_pretrained(tmp_path / "saved")
    cache = hub_cache(tmp_path / "cache", "someone/flowmo-test", tmp_path / "saved")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for loaded in (loader.from_pretrained("someone/flowmo-test", cache_dir=cache), loader.from_pretrained(
            tmp_path / "saved")):
        with torch.no_grad():
            for mine, theirs in zip(outputs(model), outputs(loaded.eval()), strict=True):
                assert torch.equal(mine, theirs)


def test_the_shipped_weights_load_through_from_pretrained_unchanged():
    shipped = sorted(p.name for p in WEIGHTS.iterdir() if (p / CONFIG_FILE).is_file())
    assert {"tokenizer", "tokenizer_distilled", "maskgit", "ar", "digits_classifier", "emoji_tokenizer",
            "emoji_tokenizer_sampling", "emoji_maskgit", "emoji_ar", "emoji_classifier"} <= set(shipped)
    for name in shipped:
        record = json.loads((WEIGHTS / name / CONFIG_FILE).read_text())
        loader = (GeneratorModel if "model_type" in record else FlowMo if "architecture_hash" in record
                  else FeatureClassifier)
        model = loader.from_pretrained(WEIGHTS / name)
        assert isinstance(model, loader) and (loader is not GeneratorModel or model.model_type == name.rsplit("_", 1)[-1]), name
        stored = load_file(str(WEIGHTS / name / WEIGHTS_FILE))
        assert stored.keys() == model.state_dict().keys(), name
        assert all(torch.equal(stored[key], value) for key, value in model.state_dict().items()), name


def test_stale_or_foreign_folders_are_refused(tmp_path):
    fresh("tokenizer").save_pretrained(tmp_path / "tok")
    fresh("maskgit").save_pretrained(tmp_path / "gen")
    with pytest.raises(ValueError, match="holds a 'maskgit' generator, not a 'ar' one"):
        ARTransformer.from_pretrained(tmp_path / "gen")
    record = json.loads((tmp_path / "tok" / CONFIG_FILE).read_text())
    record["format_version"] = 99
    (tmp_path / "tok" / CONFIG_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="format_version 99"):
        FlowMo.from_pretrained(tmp_path / "tok")
    with pytest.raises(FileNotFoundError, match="is not a FlowMo tokenizer.*config.json not found"):
        FlowMo.from_pretrained(tmp_path / "missing")


def test_local_paths_and_repo_ids_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tok").mkdir(parents=True)
    assert hub_repo_id("user/model") == "user/model" and hub_repo_id("gpt2") == "gpt2"
    assert hub_repo_id("runs/tok") is None  # exists here
    assert hub_repo_id(Path("user/model")) is None  # a Path is always local
    assert hub_repo_id("/abs/path") is None and hub_repo_id("./x") is None and hub_repo_id("a/b/c") is None


def test_a_repo_id_offline_and_not_cached_names_hf_hub_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1 forbids downloading") as error:
        MaskGIT.from_pretrained("someone/not-cached", cache_dir=tmp_path / "cache")
    assert "config.json and model.safetensors" in str(error.value)


def test_a_repo_id_without_network_says_so_instead_of_hanging(tmp_path, monkeypatch):
    """What the Hub client raises when no server answers (after its retries), turned into one clear message."""
    import huggingface_hub.hub_mixin as hub_mixin
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(hub_mixin, "hf_hub_download", unreachable)
    with pytest.raises(FileNotFoundError, match=r"the Hub is unreachable \(no network\?\).*HF_HUB_OFFLINE=1"):
        FlowMo.from_pretrained("someone/flowmo", cache_dir=tmp_path / "cache")


def test_push_to_hub_uploads_weights_config_and_card(tmp_path, monkeypatch):
    import huggingface_hub.hub_mixin as hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()}, repo=repo_id)
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    model = fresh("maskgit")
    model.config.extra["training"] = {"data": {"token_cache": "digits:train"}, "command": "python -m generator.train",
                                      "quality": {"train/accuracy": 0.5}, "step": 7}
    assert model.push_to_hub("someone/maskgit-test").endswith("/commit/1")
    assert uploaded["repo"] == "someone/maskgit-test"
    assert set(uploaded) == {"repo", CARD_FILE, CONFIG_FILE, WEIGHTS_FILE}
    assert json.loads(uploaded[CONFIG_FILE])["model_type"] == "maskgit"  # the record from_pretrained checks
    card = uploaded[CARD_FILE].decode()
    assert "library_name: flowmo-reference" in card and "digits:train" in card
    assert "python -m generator.train" in card and "train/accuracy: 0.5" in card and "at training step 7" in card
