"""PSNR/SSIM vs skimage, LPIPSMetric vs lpips, FID/IS via torch-fidelity with a random Inception network."""

import dataclasses

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from runkit.images import tensor_to_uint8, uint8_to_tensor
from evaluation.metrics import (
    LPIPSMetric,
    compute_feature_statistics,
    compute_fidelity_metrics,
    fid_from_statistics,
    format_metric,
    load_reference_statistics,
    psnr,
    save_reference_statistics,
    ssim,
)
from evaluation.feature_spaces import inception_feature_space, resolve_feature_space
from evaluation.perceptual import MissingWeightsError, build_lpips


def _pair(seed=0, batch=3, height=24, width=31, noise=0.3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    y = (x + noise * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
    return x, y


def test_psnr_and_ssim_match_skimage():
    x, y = _pair()
    a, b = tensor_to_uint8(x).numpy(), tensor_to_uint8(y).numpy()
    ours_psnr, ours_ssim = psnr(x, y), ssim(x, y)
    assert ours_psnr.shape == ours_ssim.shape == (3,)
    for i in range(3):
        assert abs(ours_psnr[i].item() - peak_signal_noise_ratio(a[i], b[i], data_range=255)) < 1e-6
        reference = structural_similarity(
            a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(ours_ssim[i].item() - reference) < 1e-4


def test_psnr_ssim_edge_cases():
    x, _ = _pair(batch=1)
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(1, dtype=torch.float64))
    # Values are compared after uint8 rounding, as the release does.
    x = uint8_to_tensor(tensor_to_uint8(x))
    assert torch.isinf(psnr(x, x + 1e-3)).all()
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[..., :-1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :8, :8], x[..., :8, :8])



def test_lpips_metric_matches_lpips_module_per_image(alexnet_file):
    metric = LPIPSMetric("alex", alexnet_file)
    reference, _ = build_lpips("alex", alexnet_file, allow_random=False)
    x, y = _pair(batch=2, height=32, width=32)
    distances = metric(x, y)
    assert distances.shape == (2,) and metric.calibrated
    with torch.no_grad():
        torch.testing.assert_close(distances, reference(x, y).flatten())
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)
    with pytest.raises(MissingWeightsError, match="lpips_weights="):
        LPIPSMetric("alex")
    assert LPIPSMetric("alex", allow_random=True).calibrated is False


def test_format_metric_marks_uncalibrated_numbers():
    assert format_metric("PSNR", 21.123456, True) == "PSNR: 21.1235"
    assert format_metric("rFID", 0.95, False) == "rFID: 0.9500 UNCALIBRATED (random backbone weights)"


def test_reference_statistics_round_trip_and_fid_formula(tmp_path):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    sigma1, sigma2 = np.diag(rng.uniform(0.5, 2, 4)), np.diag(rng.uniform(0.5, 2, 4))
    path = save_reference_statistics(tmp_path / "ref.npz", mu1, sigma1)
    loaded_mu, loaded_sigma = load_reference_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu1)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(sigma1)) - np.sqrt(np.diag(sigma2))) ** 2)
    assert abs(fid_from_statistics(mu1, sigma1, mu2, sigma2) - expected) < 1e-8
    np.savez(tmp_path / "bad.npz", mean=mu1)
    with pytest.raises(ValueError, match="mu"):
        load_reference_statistics(tmp_path / "bad.npz")


def test_missing_inception_weights_error_names_the_option(tmp_path):
    with pytest.raises(MissingWeightsError, match="inception_weights=/path/to/pt_inception-2015-12-05"):
        inception_feature_space(None, allow_random=False)
    with pytest.raises(MissingWeightsError, match="missing.pth"):  # a set path is never replaced by random weights
        inception_feature_space(tmp_path / "missing.pth", allow_random=True)
    with pytest.raises(MissingWeightsError, match="inception_weights="):
        resolve_feature_space("inception", classifier=None, inception_weights=None, allow_random=False)
    with pytest.raises(MissingWeightsError, match="missing.pth"):
        resolve_feature_space("auto", classifier=None, inception_weights=tmp_path / "missing.pth", allow_random=True)
    with pytest.raises(ValueError, match="features="):
        resolve_feature_space("vgg", classifier=None, inception_weights=None, allow_random=True)
    with pytest.raises(TypeError, match="features"):  # no implicit feature space any more
        compute_fidelity_metrics(tmp_path, tmp_path)


class _UInt8Images(torch.utils.data.Dataset):
    """torch-fidelity's input protocol: uint8 (3,H,W) tensors."""

    def __init__(self, seed, count=4, shift=0):
        generator = torch.Generator().manual_seed(seed)
        self.images = (torch.randint(0, 196, (count, 3, 32, 32), generator=generator) + shift).to(torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


@pytest.mark.slow
def test_fidelity_metrics_agree_with_torch_fidelity(tmp_path, monkeypatch):
    import torch_fidelity
    from PIL import Image

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    real, fake = _UInt8Images(0), _UInt8Images(1, shift=60)
    folder = tmp_path / "real"
    folder.mkdir()
    for i, image in enumerate(real.images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    # A 64-dim layer keeps the CPU eigendecomposition cheap; the network is the random Inception.
    space = dataclasses.replace(inception_feature_space(None, allow_random=True), fid_layer="64")
    options = dict(batch_size=4, verbose=False, isc_splits=1, save_cpu_ram=True)

    ours = compute_fidelity_metrics(folder, fake, features=space, isc=True, **options)
    direct = torch_fidelity.calculate_metrics(
        input1=str(folder), input2=fake, fid=True, isc=True, isc_splits=1, batch_size=4, cuda=False,
        save_cpu_ram=True, cache=False, verbose=False, feature_extractor=space.extractor,
        feature_layer_fid="64", feature_layer_isc=space.isc_layer,
    )
    assert ours["calibrated"] is False and ours["feature_space"] == "Inception-v3"
    assert ours["frechet_inception_distance"] > 0
    for key in ("frechet_inception_distance", "inception_score_mean"):
        assert ours[key] == pytest.approx(direct[key], rel=1e-6)

    # The same weights saved to a file and loaded (safely) give the same network, now calibrated;
    # FID against saved statistics equals FID against the images themselves.
    weights = tmp_path / "inception.pth"
    torch.save(space.module.state_dict(), weights)
    from_weights = dataclasses.replace(inception_feature_space(weights, allow_random=False), fid_layer="64")
    assert from_weights.calibrated and from_weights.extractor != space.extractor
    mu, sigma = compute_feature_statistics(fake, features=from_weights, batch_size=4, verbose=False,
                                           save_cpu_ram=True)
    assert mu.shape == (64,) and sigma.shape == (64, 64)
    stats = save_reference_statistics(tmp_path / "fake.npz", mu, sigma)
    from_file = compute_fidelity_metrics(folder, features=from_weights, fid_statistics_file=stats, batch_size=4,
                                         verbose=False, save_cpu_ram=True)
    assert from_file["calibrated"] is True
    assert from_file["frechet_inception_distance"] == pytest.approx(direct["frechet_inception_distance"], rel=1e-4)
    with pytest.raises(ValueError, match="dimension 64"):  # statistics of another layer are refused
        compute_fidelity_metrics(folder, features=dataclasses.replace(from_weights, fid_layer="192"),
                                 fid_statistics_file=stats, batch_size=4, verbose=False, save_cpu_ram=True)
