"""Stage 1A / 1B loss pieces: shapes, the flow-matching algebra, dropout, and memory flat in K."""

import pytest
import torch

from tokenizer import FlowMo, FlowMoConfig
from tokenizer.losses import (LossWeights, code_keep_mask, flow_loss, noisy_input, one_step_estimate, sample_t,
                              sample_through_sampler, stage1a_losses, stage1b_losses)
from tokenizer.sampler import random_time_grid, time_grid

SMALL = dict(image_size=16, patch_size=4, code_length=4, context_dim=12, lfq_bits=6, enc_width=0.5, dec_width=0.5,
             enc_depth=1, dec_depth=2, num_heads=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlowMo(FlowMoConfig(**SMALL))


def test_sample_t_mixture():
    g = torch.Generator().manual_seed(0)
    t = sample_t(20000, g)
    assert t.shape == (20000,) and 0 < t.min() and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.02
    # logit-normal mass concentrates around 0.5: fewer samples near the ends than uniform
    assert ((t < 0.05) | (t > 0.95)).float().mean() < 0.05
    uniform = sample_t(20000, g, logit_normal_prob=0.0)
    assert abs(((uniform < 0.05) | (uniform > 0.95)).float().mean().item() - 0.1) < 0.01
    with pytest.raises(ValueError, match="logit_normal_prob"):
        sample_t(2, g, logit_normal_prob=1.5)


def test_sample_t_mean_shift_moves_training_towards_noise():
    g = torch.Generator().manual_seed(0)
    shifted = sample_t(20000, g, logit_normal_prob=1.0, logit_normal_mean=2.0)
    assert abs(shifted.median().item() - torch.sigmoid(torch.tensor(2.0)).item()) < 0.01
    assert (sample_t(20000, g, logit_normal_prob=1.0) > 0.9).float().mean() < (shifted > 0.9).float().mean() / 3


def test_flow_algebra_perfect_velocity_recovers_data():
    x, eps, t = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0.1, 0.5, 0.9])
    x_t = noisy_input(x, eps, t)
    torch.testing.assert_close(x_t[1], 0.5 * x[1] + 0.5 * eps[1])
    v = eps - x
    assert flow_loss(v, x, eps).item() == 0.0
    torch.testing.assert_close(one_step_estimate(x_t, v, t), x)
    assert flow_loss(torch.zeros_like(v), x, eps).item() == pytest.approx(v.pow(2).mean().item())


def test_code_keep_mask_rate():
    keep = code_keep_mask(10000, 0.1, torch.Generator().manual_seed(1))
    assert keep.dtype == torch.bool and abs((~keep).float().mean().item() - 0.1) < 0.015
    with pytest.raises(ValueError, match="dropout"):
        code_keep_mask(4, 1.0)


def test_stage1a_losses_terms_and_gradients(model):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    perceptual = lambda x, y: (x - y).abs().mean()  # noqa: E731
    total, terms = stage1a_losses(model, images, LossWeights(), perceptual, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"flow", "entropy", "commitment", "perceptual", "loss"}
    expected = terms["flow"] + 0.0025 * terms["entropy"] + 0.000625 * terms["commitment"] + 0.1 * terms["perceptual"]
    torch.testing.assert_close(total.detach(), expected)
    model.zero_grad()
    total.backward()
    assert model.encoder.img_in.weight.grad.abs().sum() > 0  # the encoder learns through the straight-through code
    assert model.decoder.img_in.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_stage1b_adds_sample_term_and_reaches_decoder(model):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    mse = lambda x, y: (x - y).pow(2).mean()  # noqa: E731
    weights = LossWeights(flow=0.0, perceptual=0.0, entropy=0.0, commitment=0.0, sample=1.0)
    total, terms = stage1b_losses(model, images, weights, mse, sample_steps=3,
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(total.detach(), terms["sample"])
    model.zero_grad()
    total.backward()
    assert model.decoder.double_blocks[0].img_attn.qkv.weight.grad.abs().sum() > 0
    model.zero_grad()


def _graph_bytes(model, steps: int, checkpoint: bool) -> int:
    """Bytes of tensors the autograd graph keeps for backward while sampling with K steps."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    code = model.decoder_code_input(torch.ones(2, SMALL["code_length"], SMALL["context_dim"]))
    noise = torch.randn(2, 3, 16, 16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sample_through_sampler(model, code, noise, random_time_grid(steps, 2), checkpoint=checkpoint)
    return sum(seen.values())


def test_stage1b_memory_flat_in_k_with_checkpointing(model):
    grow_ckpt = _graph_bytes(model, 8, True) - _graph_bytes(model, 2, True)
    grow_plain = _graph_bytes(model, 8, False) - _graph_bytes(model, 2, False)
    assert grow_plain > 0
    assert grow_ckpt < 0.1 * grow_plain, (grow_ckpt, grow_plain)


def test_checkpointed_sampler_gives_same_gradients(model):
    code = model.decoder_code_input(torch.ones(1, SMALL["code_length"], SMALL["context_dim"]))
    noise, grid = torch.randn(1, 3, 16, 16), random_time_grid(3, 1, torch.Generator().manual_seed(0))
    grads = []
    for ckpt in (True, False):
        model.zero_grad()
        sample_through_sampler(model, code, noise, grid, checkpoint=ckpt).pow(2).mean().backward()
        grads.append(model.decoder.img_in.weight.grad.clone())
    model.zero_grad()
    torch.testing.assert_close(grads[0], grads[1])


def test_stage1b_fixed_grid_trains_through_the_inference_grid(model, monkeypatch):
    import tokenizer.losses as losses

    seen = []
    original = losses.sample_through_sampler
    monkeypatch.setattr(losses, "sample_through_sampler",
                        lambda m, c, n, grid, *a: seen.append(grid) or original(m, c, n, grid, *a))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    mse = lambda x, y: (x - y).pow(2).mean()  # noqa: E731
    for grid in ("pow_0.25", "random"):
        stage1b_losses(model, images, LossWeights(sample=1.0), mse, sample_steps=3, sample_grid=grid,
                       generator=torch.Generator().manual_seed(0))
    fixed, random = seen
    torch.testing.assert_close(fixed, time_grid(3, "pow_0.25").expand(2, -1))
    assert random.shape == (2, 4) and not torch.allclose(random, fixed)
