"""Sampling without the label-smoothing floor (generator.sampling.remove_label_smoothing), issue 26.

A generator trained with label smoothing eps predicts q = (1 - eps) p + eps / V; drawing from q picks a
token the model considers wrong eps (V - 1) / V of the time. Both generators sample from p instead, unless
the sampling option remove_smoothing_floor is false.
"""

from __future__ import annotations

import math

import pytest
import torch

from generator import GeneratorConfig, MaskGIT
from generator.ar import ARTransformer
from generator.config import SamplingDefaults
from generator.sampling import remove_label_smoothing

V = 16


def smoothed_logits(p: torch.Tensor, eps: float) -> torch.Tensor:
    """What a model fitted to eps-smoothed targets with true distribution p outputs (any additive constant)."""
    return ((1 - eps) * p + eps / p.shape[-1]).log() + 3.0


def test_remove_label_smoothing_recovers_the_unsmoothed_distribution():
    p = torch.zeros(2, V)
    p[0, 3] = 1.0  # a certain token
    p[1, :4] = torch.tensor([0.5, 0.3, 0.15, 0.05])  # genuine alternatives, and twelve impossible tokens
    recovered = remove_label_smoothing(smoothed_logits(p, 0.1), 0.1).softmax(dim=-1)
    torch.testing.assert_close(recovered, p, atol=1e-5, rtol=0)
    assert torch.isinf(remove_label_smoothing(smoothed_logits(p, 0.1), 0.1)[p == 0]).all()
    # Smoothing the model was not trained with is not removed: eps 0 returns the logits unchanged.
    logits = smoothed_logits(p, 0.1)
    assert remove_label_smoothing(logits, 0.0) is logits
    # The best token survives even when the logits are flat (q = 1/V everywhere, above eps / V).
    flat = remove_label_smoothing(torch.zeros(1, V), 0.5)
    assert torch.isfinite(flat).all()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        remove_label_smoothing(logits, 1.0)


def rigged(model_cls, label_smoothing: float):
    """A generator whose every prediction is the eps=0.1-smoothed one-hot of token 3, whatever its input."""
    config = GeneratorConfig(model=model_cls.model_type, seq_len=8, vocab_size=V, num_classes=3, width=32, depth=1,
                             num_heads=2, label_smoothing=label_smoothing)
    torch.manual_seed(0)
    model = model_cls(config).eval()
    p = torch.zeros(V)
    p[3] = 1.0
    with torch.no_grad():
        model.head.weight.zero_()
        if model.head.bias is not None:
            model.head.bias.zero_()
    model.head.register_forward_hook(lambda module, args, out: out + smoothed_logits(p, 0.1))
    return model


# MaskGIT with a random choice order, so that a kept token is a plain draw (a low one would mode-seek).
@pytest.mark.parametrize("model_cls, options", [(MaskGIT, {"choice_temperature": 1e6}), (ARTransformer, {})])
def test_generators_do_not_draw_from_the_smoothing_floor(model_cls, options):
    classes = torch.arange(3).repeat(40)
    smoothed = rigged(model_cls, 0.1).generate(classes, cfg_scale=1.0, temperature=1.0,
                                               generator=torch.Generator().manual_seed(0), **options)
    assert (smoothed == 3).all()  # trained with eps 0.1: the floor is the smoothing, never drawn
    # The same predictions from a model trained without smoothing are a real 10 % chance of other tokens.
    unsmoothed = rigged(model_cls, 0.0).generate(classes, cfg_scale=1.0, temperature=1.0,
                                                 generator=torch.Generator().manual_seed(0), **options)
    other = float((unsmoothed != 3).float().mean())
    expected = 0.1 * (V - 1) / V
    assert abs(other - expected) < 4 * math.sqrt(expected * (1 - expected) / unsmoothed.numel())


@pytest.mark.parametrize("model_cls, options", [(MaskGIT, {"choice_temperature": 1e6}), (ARTransformer, {})])
def test_the_floor_switch_off_draws_from_the_smoothed_distribution(model_cls, options):
    classes = torch.arange(3).repeat(40)
    model = rigged(model_cls, 0.1)
    kept = model.generate(classes, cfg_scale=1.0, temperature=1.0, generator=torch.Generator().manual_seed(0),
                          remove_smoothing_floor=False, **options)
    other = float((kept != 3).float().mean())
    expected = 0.1 * (V - 1) / V
    assert abs(other - expected) < 4 * math.sqrt(expected * (1 - expected) / kept.numel())
    # The same switch saved as the model's default.
    model.config.sampling = SamplingDefaults(remove_smoothing_floor=False)
    assert (model.generate(classes, cfg_scale=1.0, temperature=1.0, generator=torch.Generator().manual_seed(0),
                           **options) == kept).all()


def test_the_floor_switch_takes_only_a_bool():
    with pytest.raises(ValueError, match="remove_smoothing_floor must be true or false"):
        SamplingDefaults(remove_smoothing_floor="no")
