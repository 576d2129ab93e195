import pytest
import torch

from generator.attention import attention, reference_attention, resolve_backend, xformers_available


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
    if not xformers_available():
        with pytest.raises(RuntimeError, match="xformers is not installed"):
            resolve_backend("xformers", q)
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_backend("xformers", q)
    assert resolve_backend("auto", q) == "sdpa"


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
