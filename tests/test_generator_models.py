import math

import pytest
import torch

from generator import ARTransformer, GeneratorConfig, MaskGIT, load_generator
from generator.sampling import (apply_guidance, filter_logits, guidance_scale, masked_after_step, select_to_remask,
                                training_mask)

MODELS = {"maskgit": MaskGIT, "ar": ARTransformer}


def small_config(model: str, **overrides) -> GeneratorConfig:
    fields = dict(model=model, seq_len=12, vocab_size=16, num_classes=3, class_names=["a", "b", "c"], width=32,
                  depth=2, num_heads=2, mlp="swiglu", norm="rmsnorm", positions="rope")
    fields.update(overrides)
    return GeneratorConfig(**fields)


def small_model(model: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return MODELS[model](small_config(model, **overrides)).eval()


# ---------------------------------------------------------------------------- masking schedule
def test_training_mask_counts_follow_cosine_schedule():
    g = torch.Generator().manual_seed(0)
    mask = training_mask(4000, 20, generator=g)
    counts = mask.sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 20
    # E[ceil(cos(pi r/2) N)] = N * 2/pi + ~0.5 for r ~ U(0,1).
    assert abs(counts.float().mean().item() - (20 * 2 / math.pi + 0.5)) < 0.3


def test_sampling_schedule_ends_fully_unmasked_and_decreases():
    remaining = [masked_after_step(s, 8, 32) for s in range(8)]
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0 and remaining[0] < 32


def test_guidance_schedules():
    assert guidance_scale(0, 4, 3.0, "constant") == 3.0
    assert guidance_scale(3, 4, 3.0, "linear") == pytest.approx(3.0)
    assert guidance_scale(0, 4, 3.0, "linear") == pytest.approx(1.5)
    assert guidance_scale(3, 4, 3.0, "cosine") == pytest.approx(3.0)
    assert 1.0 < guidance_scale(0, 4, 3.0, "cosine") < guidance_scale(0, 4, 3.0, "linear")
    with pytest.raises(ValueError, match="constant"):
        guidance_scale(0, 4, 3.0, "exp")


def test_remask_keeps_decided_positions_and_picks_least_confident():
    confidence = torch.tensor([[0.0, -5.0, -1.0, -9.0, -0.5]])
    still = torch.tensor([[True, True, True, False, True]])
    chosen = select_to_remask(confidence, still, 2, choice_temperature=0.0)
    assert chosen.tolist() == [[False, True, True, False, False]]


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.01)).tolist() == [[False, True, True, True]]


# ---------------------------------------------------------------------------- losses
def test_maskgit_loss_counts_only_masked_positions(monkeypatch):
    model = small_model("maskgit", label_smoothing=0.0)
    indices = torch.randint(0, 16, (4, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0])
    seen = {}

    def forward(tokens, class_ids):
        seen["tokens"] = tokens
        logits = model(tokens, class_ids)
        # Corrupting every visible position must not change the loss.
        return torch.where((tokens == model.mask_id)[..., None], logits, torch.full_like(logits, 1e4))

    out = model.training_loss(indices, labels, forward=forward, generator=torch.Generator().manual_seed(3))
    masked = seen["tokens"] == model.mask_id
    assert masked.any() and (~masked).any()
    assert (seen["tokens"][~masked] == indices[~masked]).all()
    expected = torch.nn.functional.cross_entropy(model(seen["tokens"], labels)[masked], indices[masked])
    torch.testing.assert_close(out.loss, expected)


def test_label_dropout_only_in_training():
    model = small_model("ar", label_dropout=0.5)
    seen = []
    indices = torch.zeros(64, 12, dtype=torch.long)
    labels = torch.zeros(64, dtype=torch.long)
    model.training_loss(indices, labels, forward=lambda x, c: (seen.append(c), model(x, c))[1])
    model.train()
    model.training_loss(indices, labels, forward=lambda x, c: (seen.append(c), model(x, c))[1])
    assert (seen[0] == 0).all()
    assert 10 < (seen[1] == model.null_class).sum() < 54


# ---------------------------------------------------------------------------- AR specifics
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_ar_kv_cache_gives_same_logits_as_full_forward(positions):
    model = small_model("ar", positions=positions)
    indices = torch.randint(0, 16, (3, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3])  # 3 = NULL class
    with torch.no_grad():
        full = model(indices, labels)
        cache = model.new_cache()
        steps = [model.prefill(labels, cache)]
        steps += [model.decode_step(indices[:, i], i, cache) for i in range(11)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_ar_prediction_is_causal():
    model = small_model("ar")
    a = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(2))
    b = a.clone()
    b[:, 6:] = (b[:, 6:] + 1) % 16
    with torch.no_grad():
        la, lb = model(a, torch.tensor([1])), model(b, torch.tensor([1]))
    torch.testing.assert_close(la[:, :7], lb[:, :7])
    assert not torch.allclose(la[:, 7:], lb[:, 7:])


def test_ar_generation_same_with_and_without_cache():
    model = small_model("ar")
    kw = dict(cfg_scale=2.0, temperature=1.0, top_k=8, top_p=0.9)
    a = model.generate([0, 1, 2], generator=torch.Generator().manual_seed(5), **kw)
    b = model.generate([0, 1, 2], generator=torch.Generator().manual_seed(5), use_kv_cache=False, **kw)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- shared behaviour
@pytest.mark.parametrize("kind", ["maskgit", "ar"])
def test_generate_shapes_range_and_reproducibility(kind):
    model = small_model(kind)
    out = model.generate([0, 2, 1, 1], num_steps=4, cfg_scale=3.0, temperature=1.0,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 12) and out.dtype == torch.int64
    assert out.min() >= 0 and out.max() < 16
    again = model.generate(torch.tensor([0, 2, 1, 1]), num_steps=4, cfg_scale=3.0, temperature=1.0,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = model.generate([0, 2, 1, 1], num_steps=4, cfg_scale=3.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_cfg_mixing_at_scale_one_is_conditional():
    c, u = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    torch.testing.assert_close(apply_guidance(c, u, 1.0), c)
    torch.testing.assert_close(apply_guidance(c, u, 0.0), u)


@pytest.mark.parametrize("kind", ["maskgit", "ar"])
def test_cfg_scale_one_runs_only_conditional_rows_and_guidance_stacks_null_rows(kind, monkeypatch):
    model = small_model(kind)
    seen_classes = []
    original = type(model).forward

    def spy(self, x, class_ids):
        seen_classes.append(class_ids.clone())
        return original(self, x, class_ids)

    monkeypatch.setattr(type(model), "forward", spy)
    extra = dict(use_kv_cache=False) if kind == "ar" else {}  # the cached path bypasses forward()
    plain = model.generate([0, 1], num_steps=3, cfg_scale=1.0, generator=torch.Generator().manual_seed(0), **extra)
    assert all((c < model.null_class).all() for c in seen_classes)  # no NULL rows at scale 1
    seen_classes.clear()
    model.generate([0, 1], num_steps=3, cfg_scale=8.0, generator=torch.Generator().manual_seed(0), **extra)
    assert seen_classes and all(c.tolist() == [0, 1, 3, 3] for c in seen_classes)  # cond + NULL rows, one batch
    assert plain.shape == (2, 12)


def test_maskgit_guided_logits():
    model = small_model("maskgit")
    tokens = torch.randint(0, 17, (2, 12), generator=torch.Generator().manual_seed(0))
    ids, null = torch.tensor([0, 2]), torch.tensor([3, 3])
    with torch.no_grad():
        cond, uncond = model(tokens, ids), model(tokens, null)
        torch.testing.assert_close(model.guided_logits(tokens, ids, 1.0), cond)
        torch.testing.assert_close(model.guided_logits(tokens, ids, 2.5), uncond + 2.5 * (cond - uncond),
                                   atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond)


@pytest.mark.parametrize("kind", ["maskgit", "ar"])
@pytest.mark.parametrize("bad", [[3], [-1], [0, 7]])
def test_class_id_out_of_range_is_clear_error(kind, bad):
    model = small_model(kind)
    with pytest.raises(ValueError, match=r"out of range.*0\.\.2"):
        model.generate(bad, num_steps=2)


def test_bad_inputs_are_clear_errors():
    model = small_model("maskgit")
    with pytest.raises(ValueError, match="num_steps"):
        model.generate([0], num_steps=0)
    with pytest.raises(ValueError, match="integers"):
        model.generate(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="B x 12"):
        model.training_loss(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="norm"):
        small_config("maskgit", norm="batchnorm")
    with pytest.raises(ValueError, match="class_names"):
        small_config("maskgit", class_names=["x"])
    with pytest.raises(ValueError, match="model='ar'"):
        MaskGIT(small_config("ar"))


@pytest.mark.parametrize("kind", ["maskgit", "ar"])
def test_save_pretrained_round_trip(kind, tmp_path):
    model = small_model(kind, positions="learned", norm="layernorm", mlp="gelu", tokenizer_hash="abc123")
    model.save_pretrained(tmp_path / "gen")
    loaded = load_generator(tmp_path / "gen")
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.class_names == ["a", "b", "c"]
    kw = dict(num_steps=3, cfg_scale=2.0)
    assert torch.equal(model.generate([1, 2], generator=torch.Generator().manual_seed(0), **kw),
                       loaded.generate([1, 2], generator=torch.Generator().manual_seed(0), **kw))
    other = ARTransformer if kind == "maskgit" else MaskGIT
    with pytest.raises(ValueError, match="load_generator"):
        other.from_pretrained(tmp_path / "gen")


def test_load_generator_from_run_dir_picks_latest_step(tmp_path):
    old, new = small_model("maskgit", seed=0), small_model("maskgit", seed=1)
    old.save_pretrained(tmp_path / "run" / "checkpoints" / "step_00000010")
    new.save_pretrained(tmp_path / "run" / "checkpoints" / "step_00000200")
    (tmp_path / "run" / "checkpoints" / "step_00000300").mkdir()  # incomplete: no config.json
    loaded = load_generator(tmp_path / "run")
    assert torch.equal(loaded.head.weight, new.head.weight)
    with pytest.raises(FileNotFoundError, match="neither a saved generator"):
        load_generator(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_generator(tmp_path / "missing")


def test_check_tokenizer():
    from tokenizer import FlowMoConfig

    tok = FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=6, lfq_bits=2, enc_width=1 / 3,
                       dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2)
    assert tok.num_indices == 12 and tok.vocab_size == 4
    model = small_model("maskgit", vocab_size=4, tokenizer_hash=tok.architecture_hash())
    model.check_tokenizer(tok)
    with pytest.raises(ValueError, match="architecture_hash"):
        small_model("maskgit", vocab_size=4, tokenizer_hash="0" * 16).check_tokenizer(tok)
    with pytest.raises(ValueError, match="vocab"):
        small_model("maskgit").check_tokenizer(tok)


def test_temperature_is_applied_before_the_nucleus_filter():
    from generator.sampling import sample_top_k_top_p

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    # At T=1 the top token holds ~64 % of the mass, so top_p=0.6 keeps it alone; at T=4 the
    # tempered distribution is flatter and the same nucleus must admit more tokens.
    cold = sample_top_k_top_p(logits, 1.0, top_p=0.6, generator=g)
    hot = sample_top_k_top_p(logits, 4.0, top_p=0.6, generator=g)
    assert set(cold.tolist()) == {0}
    assert set(hot.tolist()) == {0, 1}
    assert torch.equal(sample_top_k_top_p(logits[:3], 0.0), torch.zeros(3, dtype=torch.long))


def test_sample_from_logits_follows_the_distribution_and_skips_impossible_tokens():
    from generator.sampling import sample_from_logits

    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    draws = sample_from_logits(probs.log().repeat(20000, 1), generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    assert frequencies[3] == 0
    torch.testing.assert_close(frequencies, probs, atol=0.015, rtol=0)


@pytest.mark.parametrize("model", ["maskgit", "ar"])
def test_per_sample_generators_make_samples_independent_of_the_batch(model):
    net = small_model(model).eval()
    classes = [1, 2, 0]

    def rngs(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batched = net.generate(classes, num_steps=4, cfg_scale=2.0, generator=rngs([10, 11, 12]))
    alone = torch.cat([net.generate([c], num_steps=4, cfg_scale=2.0, generator=rngs([s]))
                       for c, s in zip(classes, [10, 11, 12])])
    assert torch.equal(batched, alone)
    with pytest.raises(ValueError, match="one per row"):
        net.generate(classes, generator=rngs([1, 2]))
