"""benchmarks/gpu_report.py on a CPU: the no-CUDA exit, and every measuring section at toy sizes.

The sections take a device, so their plumbing (FLOP counting, shared timing helpers, the
authors'-code adapter) runs here; only the numbers need a GPU.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tokenizer import FlowMoConfig

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
CPU = torch.device("cpu")
TOY = ["--presets", "tiny", "--batch-sizes", "1", "--dtypes", "fp32", "--modes", "eager", "--steps", "2",
       "--repeats", "1", "--train-preset", "tiny", "--train-batch", "1", "--train-steps", "1", "--k", "2",
       "--train-dtypes", "fp32", "--generators", "tiny,digits_ar", "--generator-tokenizer", "tiny",
       "--gen-batch", "2", "--gen-dtype", "fp32", "--maskgit-steps", "2", "--authors-batch", "1"]


@pytest.fixture(scope="module")
def gpu_report(benchmark_module):
    return benchmark_module("gpu_report")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the command measures for minutes")
def test_command_without_cuda_says_nothing_was_measured_and_exits_0():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_report.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no CUDA device: nothing measured")
    assert "|" not in done.stdout  # no table, not even an empty one


def test_unknown_section_is_a_usage_error(gpu_report):
    with pytest.raises(SystemExit) as error:
        gpu_report.parse_args(["--sections", "tokenizer,gpu"])
    assert error.value.code == 2


def test_decode_flops_are_one_decoder_forward_per_unguided_step(gpu_report):
    flops = gpu_report.tokenizer_flops(FlowMoConfig.preset("tiny"), CPU, steps=3, cfg=1.0)
    assert flops["velocity"] > 0 and flops["encode"] > 0
    assert flops["decode"] == pytest.approx(3 * flops["velocity"])
    guided = gpu_report.tokenizer_flops(FlowMoConfig.preset("tiny"), CPU, steps=3, cfg=1.5)
    assert guided["decode"] > flops["decode"]  # guided steps run the unconditional branch too


def test_mfu_is_counted_flops_over_time_over_peak(gpu_report):
    row = gpu_report.rate_row("tokenizer", "m", "s", batch=4, seconds=2.0, peak=1.0, flops_per_item=1e12,
                              peak_tflops=10.0)
    assert row.throughput == 2.0 and row.gflop_per_item == 1000.0
    assert row.mfu == pytest.approx(4 * 1e12 / 2.0 / 10e12)


def test_sections_measure_toy_models_on_cpu(gpu_report):
    args = gpu_report.parse_args(TOY)
    tokenizer = list(gpu_report.tokenizer_rows(args, CPU))
    assert [r.setting.split()[0] for r in tokenizer] == ["encode", "velocity", "decode"]
    assert all(r.throughput > 0 and r.mfu > 0 and r.unit == "images/s" for r in tokenizer)

    train = list(gpu_report.train_rows(args, CPU))
    assert [r.setting for r in train] == ["stage 1a fp32", "stage 1b K=2 fp32"]
    assert all(r.throughput > 0 and r.unit == "steps/s" for r in train)

    generators = list(gpu_report.generator_rows(args, CPU))
    measured = {(r.model, r.setting.split()[0]) for r in generators if r.throughput}
    assert measured == {("tiny", "sdpa"), ("digits_ar", "sdpa")}
    assert "KV cache" in next(r.setting for r in generators if r.model == "digits_ar")
    skipped = [r for r in generators if r.throughput is None]
    assert [r.setting.split()[0] for r in skipped] == ["xformers", "xformers"]  # needs CUDA
    assert all("skipped" in r.note for r in skipped)


FAKE_TRAIN_UTILS = '''
import torch

BUILT = []


class Released(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.scale = torch.nn.Parameter(torch.ones(()))

    def reconstruct(self, images):
        return images * self.scale, None


def build_model(config):
    BUILT.append(config.model.context_dim)
    return Released(config)
'''


def test_authors_code_is_imported_from_the_given_path_and_compared(gpu_report, tmp_path, monkeypatch):
    package = tmp_path / "flowmo"
    (package / "configs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train_utils.py").write_text(FAKE_TRAIN_UTILS)
    (package / "configs" / "base.yaml").write_text(
        "model:\n  context_dim: 0\n  codebook_size_for_entropy: 9\neval:\n  sampling:\n    sample_steps: 25\n")
    monkeypatch.setattr(gpu_report, "FlowMoConfig", SimpleNamespace(preset=_tiny_like))  # FlowMo-Hi: minutes on a CPU
    for name in [m for m in sys.modules if m == "flowmo" or m.startswith("flowmo.")]:
        monkeypatch.delitem(sys.modules, name)
    args = gpu_report.parse_args(TOY + ["--authors-code", str(tmp_path), "--authors-preset", "flowmo_hi"])
    try:
        rows = list(gpu_report.authors_rows(args, CPU))
        built = sys.modules["flowmo.train_utils"].BUILT
    finally:
        for name in [m for m in sys.modules if m == "flowmo" or m.startswith("flowmo.")]:
            del sys.modules[name]
    assert built == [56]  # FlowMo-Hi's context_dim was set on their config
    assert str(tmp_path) not in sys.path
    theirs, ours = rows
    assert theirs.setting == "released code reconstruct bf16" and "sample_steps=25" in theirs.note
    assert ours.setting.startswith("this code reconstruct eager bf16, 2 steps")
    assert ours.note == f"{ours.throughput / theirs.throughput:.2f}x the released code"


def test_authors_code_that_is_not_a_checkout_is_reported(gpu_report, tmp_path):
    args = gpu_report.parse_args(TOY + ["--authors-code", str(tmp_path)])
    (row,) = gpu_report.authors_rows(args, CPU)
    assert row.throughput is None and "no flowmo/configs/base.yaml under --authors-code" in row.note


def _tiny_like(name: str) -> FlowMoConfig:
    """The tiny architecture with the quantizer of preset ``name``."""
    real = FlowMoConfig.preset(name)
    return dataclasses.replace(FlowMoConfig.preset("tiny"), context_dim=real.context_dim, lfq_bits=real.lfq_bits)
