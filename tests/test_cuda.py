"""The CUDA path: xformers vs SDPA, bf16 autocast training passes, torch.compile, GPU -> CPU checkpoints.

Every test here is marked ``cuda`` and skipped without a CUDA device; ``benchmarks/gpu_report.py``
runs them (``pytest -m cuda``) before it measures anything.
"""

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from generator import ARTransformer, GeneratorConfig, MaskGIT
from generator.attention import attention, reference_attention, xformers_available
from runkit.acceleration import compile_blocks
from tokenizer import FlowMo, FlowMoConfig
from runkit.checkpoint import CheckpointManager
from runkit.rng import capture_rng_state
from tokenizer.losses import LossWeights, stage1a_losses

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
needs_xformers = pytest.mark.skipif(not xformers_available(), reason="needs xformers: pip install -e '.[cuda]'")
DEVICE = "cuda"
SMALL_GEN = dict(seq_len=24, vocab_size=64, num_classes=5, width=64, depth=2, num_heads=2, mlp_ratio=2.0,
                 mlp_multiple_of=16, dropout=0.0)


def generator_model(kind: str) -> MaskGIT | ARTransformer:
    torch.manual_seed(0)
    if kind == "ar":
        config = GeneratorConfig(model="ar", norm="rmsnorm", positions="rope", mlp="swiglu", **SMALL_GEN)
        return ARTransformer(config).to(DEVICE)
    return MaskGIT(GeneratorConfig(model="maskgit", **SMALL_GEN)).to(DEVICE)


def tokens_and_classes(model: MaskGIT | ARTransformer, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(1)
    indices = torch.randint(0, model.vocab_size, (batch, model.seq_len), device=DEVICE, generator=g)
    return indices, torch.arange(batch, device=DEVICE) % model.num_classes


# ---------------------------------------------------------------------------- xformers vs SDPA
@needs_xformers
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_xformers_one_query_against_cached_keys_matches_reference(dtype):
    """The KV-cached decoding shape: one new query over all cached keys, no mask."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q = torch.randn(2, 4, 1, 64, device=DEVICE, dtype=dtype, generator=g)
    k, v = (torch.randn(2, 4, 37, 64, device=DEVICE, dtype=dtype, generator=g) for _ in range(2))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    expected = reference_attention(q, k, v, causal=False)
    for backend in ("xformers", "sdpa"):
        torch.testing.assert_close(attention(q, k, v, causal=False, backend=backend), expected, atol=tol, rtol=tol)


@needs_xformers
def test_ar_cached_decoding_with_xformers_matches_teacher_forcing_with_sdpa():
    model = generator_model("ar").eval()
    indices, classes = tokens_and_classes(model)
    with torch.no_grad():
        model.set_attention_backend("sdpa")
        expected = model(indices, classes)  # causal prefill over every position
        model.set_attention_backend("xformers")
        torch.testing.assert_close(model(indices, classes), expected, atol=1e-4, rtol=1e-4)  # causal, xformers
        cache = model.new_cache()
        cached = [model.prefill(classes, cache)]
        for position in range(model.seq_len - 1):
            cached.append(model.decode_step(indices[:, position], position, cache))
    torch.testing.assert_close(torch.stack(cached, dim=1), expected, atol=1e-4, rtol=1e-4)


@needs_xformers
def test_maskgit_forward_with_xformers_matches_sdpa():
    model = generator_model("maskgit").eval()
    indices, classes = tokens_and_classes(model)
    with torch.no_grad():
        model.set_attention_backend("sdpa")
        expected = model(indices, classes)
        model.set_attention_backend("xformers")
        torch.testing.assert_close(model(indices, classes), expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- bf16 autocast
def loss_and_grads(model: torch.nn.Module, loss_fn, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, flattened gradient) of one forward/backward, with the RNG reseeded so both passes draw alike."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.detach().float(), grads


def assert_bf16_close_to_fp32(model: torch.nn.Module, loss_fn) -> None:
    loss32, grads32 = loss_and_grads(model, loss_fn, bf16=False)
    loss16, grads16 = loss_and_grads(model, loss_fn, bf16=True)
    assert torch.isfinite(loss16) and torch.isfinite(grads16).all()
    assert loss16.item() == pytest.approx(loss32.item(), rel=3e-2)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.99
    assert (grads16.norm() / grads32.norm()).item() == pytest.approx(1.0, abs=0.05)


def test_tokenizer_stage1a_forward_backward_under_bf16_autocast():
    torch.manual_seed(0)
    model = FlowMo(FlowMoConfig.preset("tiny")).to(DEVICE).train()
    images = torch.rand(4, 3, 32, 32, device=DEVICE) * 2 - 1
    assert_bf16_close_to_fp32(model, lambda: stage1a_losses(model, images, LossWeights())[0])


@pytest.mark.parametrize("kind", ["maskgit", "ar"])
def test_generator_training_loss_under_bf16_autocast(kind):
    model = generator_model(kind).train()
    indices, classes = tokens_and_classes(model, batch=8)
    assert_bf16_close_to_fp32(model, lambda: model.training_loss(indices, classes).loss)


# ---------------------------------------------------------------------------- torch.compile
def test_compiled_flowmo_matches_eager():
    torch.manual_seed(0)
    eager = FlowMo(FlowMoConfig.preset("tiny")).to(DEVICE).eval()
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    images = torch.rand(2, 3, 32, 32, device=DEVICE) * 2 - 1
    t = torch.tensor([0.3, 0.8], device=DEVICE)
    with torch.no_grad():
        code = eager.quantize(eager.encode(images)).code
        torch.testing.assert_close(compiled.encode(images), eager.encode(images), atol=1e-4, rtol=1e-4)
        for branch in (code, None):  # conditional and the unconditional (guidance) branch
            torch.testing.assert_close(compiled.velocity(images, branch, t), eager.velocity(images, branch, t),
                                       atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- GPU -> CPU checkpoints
CPU_ONLY_LOAD = textwrap.dedent("""
    import sys, torch
    from generator import load_generator
    from tokenizer import FlowMo
    from runkit.checkpoint import CheckpointManager
    from runkit.rng import restore_rng_state
    assert not torch.cuda.is_available()
    root = sys.argv[1]
    expected = torch.load(root + "/expected.pt", weights_only=True)
    state = CheckpointManager.load_training_state(CheckpointManager(root + "/run").latest())
    restore_rng_state(state["rng"][0])  # holds CUDA RNG states this process cannot use
    moments = [t for s in state["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)]
    assert moments and all(t.device.type == "cpu" for t in moments)
    loaded = {"training_state": state["model"],
              "tokenizer": FlowMo.from_pretrained(root + "/tokenizer").state_dict(),
              "generator": load_generator(root + "/generator").state_dict()}
    for what, tensors in loaded.items():
        assert tensors.keys() == expected[what].keys(), what
        for name, tensor in tensors.items():
            assert tensor.device.type == "cpu" and torch.equal(tensor, expected[what][name]), (what, name)
    print("loaded on CPU")
""")


def test_checkpoints_written_on_gpu_load_in_a_cpu_only_process(tmp_path):
    torch.manual_seed(0)
    tokenizer = FlowMo(FlowMoConfig.preset("tiny")).to(DEVICE)
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-3)
    images = torch.rand(2, 3, 32, 32, device=DEVICE) * 2 - 1
    stage1a_losses(tokenizer, images, LossWeights())[0].backward()
    optimizer.step()  # Adam moments now live on the GPU
    generator = generator_model("ar")
    CheckpointManager(tmp_path / "run").save(1, {"model": tokenizer.state_dict(), "optimizer": optimizer.state_dict(),
                                                 "rng": [capture_rng_state()]})
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    generator.save_pretrained(tmp_path / "generator")
    cpu = {k: v.cpu() for k, v in tokenizer.state_dict().items()}
    torch.save({"training_state": cpu, "tokenizer": cpu,
                "generator": {k: v.cpu() for k, v in generator.state_dict().items()}}, tmp_path / "expected.pt")

    done = subprocess.run([sys.executable, "-c", CPU_ONLY_LOAD, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded on CPU" in done.stdout
