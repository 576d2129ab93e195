"""benchmarks/photo_generalisation.py on a toy corpus and two toy runs: every kept step of every run is
scored on its own training photos, the held-out files and the unseen source, beside the codecs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from tokenizer.train import train

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TINY = ["experiment=photo_corpus", "tokenizer.image_size=16", "tokenizer.code_length=4", "tokenizer.enc_depth=1",
        "tokenizer.dec_depth=1", "train.batch_size=4", "train.warmup_steps=0", "log.images_every=0",
        "log.val_every=0", "train.compile=false", "checkpoint.every=2", "checkpoint.keep_every=2",
        "data.crops_per_photo=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("corpus")
    splits = {"train": {"pkg-a": ("astronaut", "coffee"), "pkg-b": ("chelsea",)}, "val": {"pkg-a": ("rocket",)},
              "test_unseen": {"pkg-c": ("immunohistochemistry", "hubble_deep_field")}}
    for split, packages in splits.items():
        for package, names in packages.items():
            (root / split / package).mkdir(parents=True)
            for name in names:
                Image.fromarray(getattr(data, name)()).save(root / split / package / f"{name}.png")
    return root


def test_runs_are_scored_on_three_sets_at_every_kept_step(corpus, tmp_path, benchmark_module):
    runs = []
    for name, steps, photos in (("few", 2, 1), ("all", 4, None)):
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            cfg = compose("tokenizer_train", overrides=[*TINY, f"run_dir={tmp_path / name}", f"data.root={corpus}",
                                                        f"train.max_steps={steps}",
                                                        f"data.train_max_photos={photos or 'null'}"])
        train(cfg)
        runs.append(str(tmp_path / name))
    bench = benchmark_module("photo_generalisation")
    out = tmp_path / "out"
    results = bench.main([*runs, "--root", str(corpus), "--num-images", "6", "--decode-steps", "1",
                          "--out-dir", str(out)])
    few, every = results["runs"]
    assert (few["photos"], every["photos"]) == (1, 3)
    assert [row["step"] for row in few["steps"]] == [2] and [row["step"] for row in every["steps"]] == [2, 4]
    assert bench.common_step(results["runs"]) == 2
    for row in every["steps"]:
        assert set(bench.SETS) <= set(row) and all(0 < row[name]["psnr"] < 60 for name in bench.SETS)
    assert {"thumbnail", "JPEG scan bytes"} == set(results["codecs"]["unseen source"])
    assert (out / "photo_generalisation.png").stat().st_size > 0 and (out / "results.json").is_file()
    with pytest.raises(SystemExit, match="no complete checkpoints"):
        bench.main([str(tmp_path), "--root", str(corpus), "--out-dir", str(out)])
