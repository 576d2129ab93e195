"""The attention kernels (SDPA on the CPU, xformers on CUDA) and how a model chooses between them."""

import json

import pytest
import torch

import generator.transformer as transformer
from generator import GeneratorConfig, MaskGIT, load_generator
from generator.attention import attention, check_kernel, reference_attention, resolve_backend, xformers_available

TINY = dict(seq_len=6, vocab_size=8, num_classes=2, width=16, depth=2, num_heads=2)
UNUSABLE_XFORMERS = "CUDA" if xformers_available() else "xformers is not installed"  # what a CPU run says


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_plain_softmax(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 16, generator=g) for _ in range(3))
    out = attention(q, k, v, causal=causal, backend="sdpa")
    torch.testing.assert_close(out, reference_attention(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_causal_attention_ignores_future_keys():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 3:] += 10.0
    v2[:, :, 3:] -= 10.0
    a, b = attention(q, k, v, causal=True, backend="sdpa"), attention(q, k2, v2, causal=True, backend="sdpa")
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3])


def test_unknown_backend_and_unusable_xformers_are_clear_errors():
    q = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="unknown"):
        attention(q, q, q, causal=False, backend="flash")
    with pytest.raises(ValueError, match="unknown"):
        resolve_backend("flash", q.device)
    with pytest.raises(RuntimeError, match=UNUSABLE_XFORMERS):
        check_kernel("xformers", q.device)
    with pytest.raises(RuntimeError, match=UNUSABLE_XFORMERS):
        attention(q, q, q, causal=False, backend="xformers")
    assert resolve_backend("auto", q.device) == "sdpa"
    assert resolve_backend("xformers", q.device) == "xformers"  # kept: the call says why it cannot run


def attention_layers(model: torch.nn.Module) -> list[transformer.SelfAttention]:
    return [m for m in model.modules() if isinstance(m, transformer.SelfAttention)]


def test_the_kernel_is_chosen_when_built_or_moved_not_on_every_call(monkeypatch):
    model = MaskGIT(GeneratorConfig(model="maskgit", **TINY)).eval()
    assert [(a.backend, a.kernel) for a in attention_layers(model)] == [("auto", "sdpa")] * 2
    calls = []
    monkeypatch.setattr(transformer, "resolve_backend", lambda backend, device: calls.append(backend) or "sdpa")
    model.to(torch.float64)  # any move re-chooses, for every layer
    assert calls == ["auto", "auto"]
    with torch.no_grad():
        model(torch.zeros(2, TINY["seq_len"], dtype=torch.long), torch.tensor([0, 1]))
    assert calls == ["auto", "auto"]


def test_the_requested_backend_is_saved_and_loaded(tmp_path):
    model = MaskGIT(GeneratorConfig(model="maskgit", **TINY))
    model.set_attention_backend("sdpa")
    assert model.config.attention_backend == "sdpa"
    model.save_pretrained(tmp_path / "sdpa")
    assert json.loads((tmp_path / "sdpa" / "config.json").read_text())["config"]["attention_backend"] == "sdpa"
    loaded = load_generator(tmp_path / "sdpa")
    assert loaded.config.attention_backend == "sdpa"
    assert {a.backend for a in attention_layers(loaded)} == {"sdpa"}
    # Weights saved before the field existed load as "auto".
    record = json.loads((tmp_path / "sdpa" / "config.json").read_text())
    del record["config"]["attention_backend"]
    (tmp_path / "sdpa" / "config.json").write_text(json.dumps(record))
    assert load_generator(tmp_path / "sdpa").config.attention_backend == "auto"


def test_unusable_xformers_fails_when_set_and_when_run_never_when_loaded(tmp_path):
    model = MaskGIT(GeneratorConfig(model="maskgit", **TINY))
    with pytest.raises(RuntimeError, match=UNUSABLE_XFORMERS):
        model.set_attention_backend("xformers")
    assert model.config.attention_backend == "auto"  # a refused switch changes nothing
    with pytest.raises(ValueError, match="unknown"):
        model.set_attention_backend("flash")
    # A model saved with xformers (e.g. trained on a GPU) still builds and loads on the CPU ...
    gpu_made = MaskGIT(GeneratorConfig(model="maskgit", attention_backend="xformers", **TINY))
    gpu_made.save_pretrained(tmp_path / "gpu")
    loaded = load_generator(tmp_path / "gpu")
    # ... and says what to do when it runs; switching it back works.
    with pytest.raises(RuntimeError, match=UNUSABLE_XFORMERS):
        loaded.generate([0], num_steps=1)
    loaded.set_attention_backend("auto")
    assert loaded.generate([0], num_steps=1).shape == (1, TINY["seq_len"])
    with pytest.raises(ValueError, match="attention_backend"):
        GeneratorConfig(model="maskgit", attention_backend="flash", **TINY)


def test_causal_needs_square_scores():
    with pytest.raises(ValueError, match="as many queries as keys"):
        attention(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), causal=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not xformers_available(), reason="needs CUDA and xformers")
@pytest.mark.parametrize("causal", [False, True])
def test_xformers_matches_sdpa_on_cuda(causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, causal, backend="xformers"),
                               attention(q, k, v, causal, backend="sdpa"), atol=2e-2, rtol=2e-2)
