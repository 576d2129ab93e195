"""What the demo draws for its example prompts: one row per prompt, the class it matched, N samples.

    python benchmarks/demo_prompts.py --domain emoji          # the emoji domain's example prompts, AR first
    python benchmarks/demo_prompts.py --domain emoji --generator MaskGIT --samples 8 --seed 1

Everything goes through :class:`app.pipeline.DemoPipeline`, as the Generate tab does: the prompt is
matched to its classes, the generator samples at its saved defaults and the tokens decode through the
domain's generation decoder at its saved settings. Writes one PNG, images enlarged for viewing, each
row labelled with the prompt and the class it matched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

LABEL_WIDTH = 150  # pixels left of each row for the prompt and its class


def prompt_rows(domain: str, generator: str | None, prompts: Sequence[str] | None, samples: int,
                seed: int) -> list[tuple[str, str, list[Image.Image]]]:
    """(prompt, matched class names, samples) for each prompt: the domain's examples unless given."""
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
    return rows


def draw_rows(rows: Sequence[tuple[str, str, list[Image.Image]]], scale: int) -> Image.Image:
    """The rows as one picture: labels on the left, each sample enlarged ``scale`` times (nearest)."""
    side = rows[0][2][0].width * scale
    columns = max(len(images) for _, _, images in rows)
    canvas = Image.new("RGB", (LABEL_WIDTH + columns * (side + 4), len(rows) * (side + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (prompt, name, images) in enumerate(rows):
        y = 4 + r * (side + 4)
        draw.text((4, y + side // 2 - 12), f'"{prompt}"\n-> {name}', fill="black")
        for c, image in enumerate(images):
            canvas.paste(image.resize((side, side), Image.NEAREST), (LABEL_WIDTH + c * (side + 4), y))
    return canvas


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="emoji")
    parser.add_argument("--generator", default=None, help="MaskGIT | AR (default: the one the demo selects first)")
    parser.add_argument("--prompts", nargs="*", default=None, help="default: the domain's example prompts")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_DIR / "benchmarks/results/emoji_quality/demo_prompts.png"))
    args = parser.parse_args(argv)
    rows = prompt_rows(args.domain, args.generator, args.prompts, args.samples, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_rows(rows, args.scale).save(out)
    for prompt, name, images in rows:
        print(f"{prompt!r} -> {name}: {len(images)} samples")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
