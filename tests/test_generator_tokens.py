import json

import pytest
import torch
from torch.utils.data import Dataset

from generator.tokens import MANIFEST_FILE, TokenBatches, TokenCache, shard_file, tokenize_to_cache
from tokenizer import FlowMo, FlowMoConfig


def tiny_tokenizer() -> FlowMo:
    torch.manual_seed(0)
    config = FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=6, lfq_bits=2, enc_width=1 / 3,
                          dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2)
    return FlowMo(config).eval()


class RandomImages(Dataset):
    def __init__(self, n: int, fail_at: int | None = None):
        g = torch.Generator().manual_seed(1)
        self.images = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
        self.labels = torch.arange(n) % 3
        self.fail_at = fail_at

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return self.images[i], int(self.labels[i])


def test_token_cache_contents_flip_and_manifest(tmp_path):
    tok, data = tiny_tokenizer(), RandomImages(7)
    manifest = tokenize_to_cache(tok, data, tmp_path, class_names=["a", "b", "c"], flip=True, shard_size=3,
                                 batch_size=2, progress=False)
    assert manifest.complete and manifest.num_shards == 3
    stored = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert stored["tokenizer_hash"] == tok.config.architecture_hash()
    assert (stored["num_indices"], stored["vocab_size"], stored["num_classes"]) == (12, 4, 3)
    cache = TokenCache.load(tmp_path)
    assert cache.indices.shape == (7, 2, 12) and cache.indices.dtype == torch.int16
    with torch.no_grad():
        assert torch.equal(cache.indices[:, 0].long(), tok.tokenize(data.images))
        assert torch.equal(cache.indices[:, 1].long(), tok.tokenize(data.images.flip(-1)))
    assert cache.labels.tolist() == data.labels.tolist()


def test_token_cache_resumes_after_a_kill_and_skips_finished_shards(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(KeyboardInterrupt):
        tokenize_to_cache(tok, RandomImages(8, fail_at=4), tmp_path, class_names=["a", "b", "c"], shard_size=3,
                          batch_size=2, progress=False)
    assert (tmp_path / shard_file(0)).is_file() and not (tmp_path / shard_file(1)).exists()
    with pytest.raises(ValueError, match="incomplete"):
        TokenCache.load(tmp_path)
    first_shard_mtime = (tmp_path / shard_file(0)).stat().st_mtime_ns
    tokenize_to_cache(tok, RandomImages(8), tmp_path, class_names=["a", "b", "c"], shard_size=3, batch_size=2,
                      progress=False)
    assert (tmp_path / shard_file(0)).stat().st_mtime_ns == first_shard_mtime  # skipped, not rewritten
    cache = TokenCache.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(cache.indices[:, 0].long(), tok.tokenize(RandomImages(8).images))
    with pytest.raises(ValueError, match="different settings"):
        tokenize_to_cache(tok, RandomImages(8), tmp_path, class_names=["a", "b", "c"], shard_size=4, progress=False)


def test_token_batches_are_deterministic_and_disjoint_across_ranks(tmp_path):
    tokenize_to_cache(tiny_tokenizer(), RandomImages(9), tmp_path, class_names=["a", "b", "c"], flip=True,
                      shard_size=4, progress=False)
    cache = TokenCache.load(tmp_path)
    a, b = TokenBatches(cache, 2, seed=3), TokenBatches(cache, 2, seed=3)
    for n in (0, 5, 1, 9):
        torch.testing.assert_close(a.batch(n), b.batch(n))
    assert a.batch(0)[0].dtype == torch.int64
    epoch = torch.cat([a.batch(n)[1] for n in range(a.batches_per_epoch)])
    assert len(epoch) == 8
    rank0, rank1 = TokenBatches(cache, 2, seed=3, rank=0, world_size=2), TokenBatches(cache, 2, seed=3, rank=1,
                                                                                       world_size=2)
    rank0.batch(0), rank1.batch(0)
    assert len(rank0._order) == len(rank1._order) == 4 or len(rank0._order) + len(rank1._order) == 9
    assert set(rank0._order.tolist()).isdisjoint(rank1._order.tolist())
    with pytest.raises(ValueError, match="at least 20"):
        TokenBatches(cache, 10, world_size=2)


def test_missing_cache_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenize_dataset"):
        TokenCache.load(tmp_path)


def test_default_cache_dir_changes_with_the_encoder_weights(tmp_path):
    from generator.tokenize_dataset import default_cache_dir

    first, same = tiny_tokenizer(), tiny_tokenizer()
    retrained = tiny_tokenizer()
    with torch.no_grad():
        next(retrained.encoder.parameters()).add_(1e-3)  # same architecture, new tokens
    other_decoder = tiny_tokenizer()
    with torch.no_grad():
        next(other_decoder.decoder.parameters()).add_(1.0)  # the decoder does not change tokens
    path = default_cache_dir(tmp_path, "digits", "train", first, flip=False)
    assert path == default_cache_dir(tmp_path, "digits", "train", same, flip=False)
    assert path == default_cache_dir(tmp_path, "digits", "train", other_decoder, flip=False)
    assert path != default_cache_dir(tmp_path, "digits", "train", retrained, flip=False)
    assert path.name.startswith(f"digits_train_{first.config.architecture_hash()}_")


def test_an_explicit_cache_from_another_encoder_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from generator.tokens import encoder_fingerprint
    from generator.train import resolve_token_cache

    maker, other = tiny_tokenizer(), tiny_tokenizer()
    with torch.no_grad():
        next(other.encoder.parameters()).add_(1e-3)
    maker.save_pretrained(tmp_path / "maker")
    other.save_pretrained(tmp_path / "other")
    manifest = tokenize_to_cache(maker, RandomImages(4), tmp_path / "cache", class_names=["a", "b", "c"],
                                 shard_size=4, batch_size=2, progress=False)
    assert manifest.encoder_fingerprint == encoder_fingerprint(maker)

    def cfg(tokenizer_dir):
        return OmegaConf.create({"tokens": {"cache": str(tmp_path / "cache")},
                                 "tokenizer": {"checkpoint": str(tokenizer_dir), "preset": None}})

    assert resolve_token_cache(cfg(tmp_path / "maker"), True, lambda: None) == tmp_path / "cache"
    with pytest.raises(ValueError, match="another tokenizer's encoder"):
        resolve_token_cache(cfg(tmp_path / "other"), True, lambda: None)


def test_jittered_views_are_new_sequences_and_rebuild_identically(tmp_path):
    from generator.tokens import cache_views

    tok, data = tiny_tokenizer(), RandomImages(6)
    kwargs = dict(class_names=["a", "b", "c"], jitter_views=2, jitter_strength=0.5, shard_size=4, batch_size=3,
                  progress=False)
    manifest = tokenize_to_cache(tok, data, tmp_path / "a", **kwargs)
    assert manifest.augmentations == ["none", "jitter1x0.5", "jitter2x0.5"]
    cache = TokenCache.load(tmp_path / "a")
    assert cache.indices.shape == (6, 3, 12)
    with torch.no_grad():
        assert torch.equal(cache.indices[:, 0].long(), tok.tokenize(data.images))  # view 0 is the image itself
    assert not torch.equal(cache.indices[:, 1], cache.indices[:, 0])
    assert not torch.equal(cache.indices[:, 1], cache.indices[:, 2])  # each view draws its own jitter
    tokenize_to_cache(tok, data, tmp_path / "b", **kwargs)  # seeded per shard: a rebuild is identical
    assert torch.equal(TokenCache.load(tmp_path / "b").indices, cache.indices)
    with pytest.raises(ValueError, match="jitter_strength"):
        cache_views(jitter_views=1, jitter_strength=2.0)
    with pytest.raises(ValueError, match="jitter_views"):
        cache_views(jitter_views=-1)
