import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from generator import GeneratorConfig, MaskGIT
from tokenizer import FlowMo, FlowMoConfig
from imagedata.digits import DIGIT_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tok = FlowMoConfig(image_size=16, patch_size=4, code_length=4, context_dim=6, lfq_bits=2, enc_width=1 / 3,
                       dec_width=1 / 3, enc_depth=1, dec_depth=1, num_heads=2)
    FlowMo(tok).save_pretrained(tmp / "tok")
    MaskGIT(GeneratorConfig(model="maskgit", seq_len=12, vocab_size=4, num_classes=10, class_names=DIGIT_NAMES,
                            width=32, depth=1, num_heads=2,
                            tokenizer_hash=tok.architecture_hash())).save_pretrained(tmp / "gen")
    return tmp


def run_sample(models, *overrides):
    return subprocess.run([sys.executable, "-m", "generator.sample", f"checkpoint={models / 'gen'}",
                           f"tokenizer.checkpoint={models / 'tok'}", "decode_steps=2", "sampling.num_steps=2",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_sample_cli_writes_grid_and_indices(models, tmp_path):
    result = run_sample(models, "class_ids=[3,7]", "samples_per_class=2", f"out={tmp_path / 'grid.png'}",
                        f"save_indices={tmp_path / 'idx.safetensors'}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").is_file()
    saved = load_file(str(tmp_path / "idx.safetensors"))
    assert saved["indices"].shape == (4, 12) and saved["class_ids"].tolist() == [3, 3, 7, 7]


@pytest.mark.slow
def test_sample_cli_prompt_and_bad_class(models, tmp_path):
    result = run_sample(models, "prompt='a seven'", "samples_per_class=1", f"out={tmp_path / 'p.png'}")
    assert result.returncode == 0, result.stderr
    assert "-> 7 (seven)" in result.stdout
    bad = run_sample(models, "class_ids=[12]", f"out={tmp_path / 'bad.png'}")
    assert bad.returncode != 0 and "class id 12 is out of range" in bad.stderr
