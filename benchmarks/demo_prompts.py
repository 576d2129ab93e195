"""What the demo draws for its example prompts: one row per prompt, the class it matched, N samples and,
beside them, N real training images of that class.

    python benchmarks/demo_prompts.py --domain emoji          # the emoji domain's example prompts, AR first
    python benchmarks/demo_prompts.py --domain emoji --generator MaskGIT --samples 8 --seed 1

Everything goes through :class:`app.pipeline.DemoPipeline`, as the Generate tab does: the prompt is
matched to its classes, the generator samples at its saved defaults and the tokens decode through the
domain's generation decoder at its saved settings. The picture is drawn like ``emoji_quality.py``'s grids
(:func:`emoji_quality.class_grid`); the real images come from the domain's dataset when it is on disk
(``python -m imagedata.prepare <name>``), else the rows show samples only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

REPO_DIR = Path(__file__).resolve().parents[1]
for _path in (REPO_DIR, REPO_DIR / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from emoji_quality import class_grid, grid_rows, load_split  # noqa: E402  (benchmarks/, beside this script)

Rows = list[tuple[str, str, list[Image.Image]]]  # (prompt, matched class name, samples)


def prompt_rows(domain: str, generator: str | None, prompts: Sequence[str] | None, samples: int,
                seed: int) -> tuple[Rows, list[str]]:
    """(prompt, matched class name, samples) for each prompt (the domain's examples unless given), and the
    generator's class names."""
    from app.pipeline import DemoPipeline
    from generator.pipeline import to_pil

    demo = DemoPipeline.load(domain=domain, photo_tokenizer=False)
    generator = generator or demo.generators_for(domain)[0]
    rows = []
    for prompt in prompts or demo.prompt_examples(domain):
        selection = demo.select_prompt(prompt, domain=domain)
        result = demo.generate(selection.class_ids[:1], generator, samples_per_class=samples, seed=seed,
                               domain=domain)
        rows.append((prompt, selection.class_names[0], to_pil(result.images)))
    return rows, demo.classes_of(domain)


def real_training_images(domain: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The domain's training images, uint8 (N,3,S,S), and their labels; none when its dataset is not on disk."""
    from app.settings import DemoSettings

    spec = DemoSettings().domains[domain]
    root = spec.data_root()
    if spec.data is None or (root is not None and not root.is_dir()):
        return torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    return load_split(spec.reference_data(), "train", image_size)


def draw(rows: Rows, class_names: Sequence[str], real: tuple[torch.Tensor, torch.Tensor], out: Path,
         title: str, seed: int = 0) -> Path:
    """Each row as :func:`emoji_quality.class_grid` draws it: prompt and class, the samples, then as many real
    training images of the class (drawn by :func:`emoji_quality.grid_rows`)."""
    drawn = []
    for prompt, name, images in rows:
        made = torch.stack([torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1) for image in images])
        c = class_names.index(name)
        ((_, generated, reference),) = grid_rows(made, torch.full((len(made),), c), *real, [c], class_names,
                                                 len(made), seed)
        drawn.append((f'"{prompt}"\n-> {name}', generated, reference))
    return class_grid(drawn, out, title)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="emoji")
    parser.add_argument("--generator", default=None, help="MaskGIT | AR (default: the one the demo selects first)")
    parser.add_argument("--prompts", nargs="*", default=None, help="default: the domain's example prompts")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks/results/emoji_quality/demo_prompts.png"))
    args = parser.parse_args(argv)
    rows, class_names = prompt_rows(args.domain, args.generator, args.prompts, args.samples, args.seed)
    real = real_training_images(args.domain, rows[0][2][0].width)
    title = f"{args.domain}: the demo's example prompts, {args.generator or 'its first generator'}, generation decoder"
    out = draw(rows, class_names, real, Path(args.out), title, args.seed)
    for prompt, name, images in rows:
        print(f"{prompt!r} -> {name}: {len(images)} samples")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
