"""LFQ loss terms against direct formulas."""

import math

import torch

from tokenizer import quantizer as lfq


def naive_entropy_loss(code: torch.Tensor, bits: int, temperature: float) -> torch.Tensor:
    x = lfq.split_subtokens(code, bits).reshape(-1, bits)
    log_probs = torch.log_softmax(2 * x.double() @ lfq.codebook(bits, dtype=torch.float64).T / temperature, dim=-1)
    probs = log_probs.exp()
    per_sample = -(probs * log_probs).sum(-1).mean()
    avg = probs.mean(0)
    return (per_sample + (avg * avg.log()).sum()).float()


def test_codebook_rows_are_the_codes_of_their_indices():
    book = lfq.codebook(5)
    assert torch.equal(lfq.code_to_indices(book[None], 5)[0], torch.arange(32))


def test_entropy_loss_matches_direct_formula_and_is_chunk_invariant():
    code = torch.randn(4, 8, 12, generator=torch.Generator().manual_seed(0))
    expected = naive_entropy_loss(code, 6, 0.1)
    torch.testing.assert_close(lfq.entropy_loss(code, 6), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lfq.entropy_loss(code, 6, chunk_size=7), expected, rtol=1e-5, atol=1e-5)


def test_entropy_loss_extremes():
    bits = 4
    # Confident codes spread evenly over the codebook: per-sample entropy ~0, codebook entropy log(16).
    spread = (lfq.codebook(bits) * 10)[None]
    assert math.isclose(lfq.entropy_loss(spread, bits).item(), -math.log(16), abs_tol=1e-3)
    # Every sub-token on the same code: both entropies ~0.
    collapsed = torch.full((1, 16, bits), 10.0)
    assert abs(lfq.entropy_loss(collapsed, bits).item()) < 1e-3


def test_commitment_loss_only_pulls_the_continuous_code():
    code = torch.tensor([[[0.5, -2.0]]], requires_grad=True)
    q = lfq.sign_quantize(code)
    loss = lfq.commitment_loss(code, q)
    assert math.isclose(loss.item(), ((0.5 - 1) ** 2 + (-2 + 1) ** 2) / 2)
    loss.backward()
    torch.testing.assert_close(code.grad, torch.tensor([[[-0.5, -1.0]]]))
