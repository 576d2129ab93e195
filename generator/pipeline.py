"""``Pipeline``: one generator and its FlowMo tokenizer, for generation, reconstruction and tokens from Python.

    from generator import Pipeline

    pipe = Pipeline.from_pretrained("app/weights/maskgit", "app/weights/tokenizer_distilled")
    images = pipe("a seven and a three", num_images=8, seed=0)     # list of PIL images
    indices = pipe.tokenize(images[0])                             # 1 x N int64 token indices
    pipe.reconstruct(images[0]).save("reconstruction.png")

Any tokenizer with the encoder the generator's tokens came from decodes them. For generation, one whose decoder
was distilled toward its teacher's own samples keeps the samples as varied as real images, where a decoder
trained toward the image (best for reconstruction) averages near neighbours together. The emoji domain ships
one: ``Pipeline.from_pretrained("app/weights/emoji_ar", "app/weights/emoji_tokenizer_sampling")``.

The demo (``app/``) and ``python -m generator.sample`` generate, tokenize and decode through this class,
so a seed gives the same images everywhere: tokens are sampled from a generator on the model's device
seeded with ``seed``, and the decoder's starting noise comes from a CPU generator seeded with ``seed``
(the same noise whatever the device).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from runkit.pretrained import hub_repo_id
from tokenizer import CodeSearchResult, FlowMo, load_flowmo, search_code

from .base import GeneratorModel
from .loading import load_generator

ProgressFn = Callable[[float, str], None]  # progress(fraction of the work done in [0, 1], message)
TOKEN_SHARE = 0.3  # the part of a generate call's progress spent sampling tokens; decoding takes the rest
Source = str | os.PathLike


@dataclass
class Generated:
    """What :meth:`Pipeline.generate` returns."""

    images: Tensor  # (B, 3, H, W) float32 in [-1, 1], on the CPU
    indices: Tensor  # (B, N) int64 token indices, on the CPU
    class_ids: list[int]

    def pil_images(self) -> list[Image.Image]:
        return to_pil(self.images)


def to_pil(images: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) images in [-1, 1] -> B RGB PIL images."""
    from runkit.images import tensor_to_uint8

    return [Image.fromarray(pixels.numpy()) for pixels in tensor_to_uint8(images)]


def load_tokenizer_source(source: Source, preset: str | None = None, **hub_kwargs: Any) -> FlowMo:
    """A FlowMo from a local path (saved folder, training run or step folder, released ``.pth`` with ``preset``)
    or a Hub repo id."""
    repo_id = hub_repo_id(source)
    if repo_id is None:
        return load_flowmo(source, config=preset)
    return FlowMo.from_pretrained(repo_id, **hub_kwargs)


def load_generator_source(source: Source, **hub_kwargs: Any) -> GeneratorModel:
    """A MaskGIT or AR generator from a local path (saved folder, training run or step folder) or a Hub repo id."""
    repo_id = hub_repo_id(source)
    if repo_id is None:
        return load_generator(source)
    return GeneratorModel.from_pretrained(repo_id, **hub_kwargs).eval()


class Pipeline:
    """A class-conditional generator (None: reconstruction and tokens only) over the tokenizer whose tokens it
    models. Images come back as PIL images (``__call__``, :meth:`reconstruct`) or tensors (:meth:`generate`,
    :meth:`decode`); images go in as PIL images, paths, encoded bytes or (B, 3, S, S) tensors in [-1, 1]."""

    def __init__(self, generator: GeneratorModel | None, tokenizer: FlowMo):
        if generator is not None:
            generator.check_tokenizer(tokenizer.config)
        self.generator, self.tokenizer = generator, tokenizer
        self._vocabulary: Any = None

    @classmethod
    def from_pretrained(cls, generator: Source | None, tokenizer: Source, *, tokenizer_preset: str | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **hub_kwargs: Any) -> "Pipeline":
        """Load a generator and its tokenizer, each a local folder or a Hub repo id (``hub_kwargs``:
        ``revision``, ``cache_dir``, ``token``, ...). A generator trained on another tokenizer's tokens is
        refused, or warned about when only the weights differ."""
        flowmo = load_tokenizer_source(tokenizer, tokenizer_preset, **hub_kwargs)
        model = None
        if generator is not None:
            model = load_generator_source(generator, **hub_kwargs)
            try:
                model.check_tokenizer(flowmo.config)
            except ValueError as error:
                raise ValueError(f"generator {generator} does not fit tokenizer {tokenizer}: {error}") from None
            mismatch = model.other_tokenizer_warning(flowmo)
            if mismatch:
                warnings.warn(mismatch, stacklevel=2)
            model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(model, flowmo.to(device=device, dtype=dtype).eval().requires_grad_(False))

    # ------------------------------------------------------------------ classes and prompts
    def _model(self) -> GeneratorModel:
        if self.generator is None:
            raise ValueError("this pipeline has no generator: load one to generate (Pipeline.from_pretrained("
                             "generator, tokenizer))")
        return self.generator

    @property
    def class_names(self) -> list[str]:
        return self._model().class_names

    def vocabulary(self) -> Any:
        """The prompt vocabulary of the generator's classes (``generator.prompts.ClassVocabulary``), built once."""
        if self._vocabulary is None:
            from .prompts import ClassVocabulary

            self._vocabulary = ClassVocabulary.for_class_names(self.class_names)
        return self._vocabulary

    def class_ids(self, prompt: str | int | Sequence[int | str]) -> list[int]:
        """Class ids from a free-text prompt ("a seven and a three" -> [7, 3]), one class name or id, or a
        list of names and ids. A prompt that names no class raises ``prompts.NoMatchError`` (a ValueError)."""
        names = self.class_names
        if isinstance(prompt, str) and prompt not in names:
            return self.vocabulary().classes_for_prompt(prompt)
        ids = []
        for item in [prompt] if isinstance(prompt, (str, int)) else prompt:
            if isinstance(item, str) and item not in names:
                raise ValueError(f"unknown class {item!r}; this generator has {len(names)} classes, "
                                 f"e.g. {', '.join(names[:5])}")
            ids.append(names.index(item) if isinstance(item, str) else int(item))
        return ids

    # ------------------------------------------------------------------ generation
    def __call__(self, prompt: str | int | Sequence[int | str], num_images: int = 1, seed: int = 0,
                 **options: Any) -> list[Image.Image]:
        """``num_images`` images of what ``prompt`` names (the classes in turn when it names several).
        ``options``: :meth:`generate`'s (sampling settings, decoder settings, batch size, progress)."""
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        classes = self.class_ids(prompt)
        return self.generate([classes[i % len(classes)] for i in range(num_images)], seed=seed,
                             **options).pil_images()

    def generate(self, class_ids: Sequence[int] | Tensor, *, seed: int = 0, decode_steps: int | None = None,
                 decode_cfg: float | None = None, batch_size: int = 64, progress: ProgressFn | None = None,
                 **sampling: Any) -> Generated:
        """One image per class id, ``batch_size`` at a time (the random streams run on across batches, so the
        same seed and batch size give the same images). ``sampling``: the generator's options (``num_steps``,
        ``cfg_scale``, ``temperature``, ``top_k``, ...); unset ones, and unset decoder settings, come from
        the defaults saved with the models."""
        model = self._model()
        ids = model.class_id_tensor(class_ids)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        token_rng = torch.Generator(device=ids.device).manual_seed(seed)
        noise_rng = torch.Generator().manual_seed(seed)
        chunks = ids.split(batch_size)
        if progress is not None:
            progress(0.0, f"sampling {ids.numel()} token sequences with {type(model).__name__}")
        images, indices = [], []
        for k, chunk in enumerate(chunks):
            start, share = k / len(chunks), 1 / len(chunks)

            def token_progress(step: int, total: int) -> None:
                if progress is not None:
                    progress(start + share * TOKEN_SHARE * step / total, f"sampling tokens: step {step}/{total}")

            with torch.inference_mode():
                tokens = model.generate(chunk, generator=token_rng, progress=token_progress, **sampling)
            noise = self._noise(len(chunk), noise_rng)
            images.append(self._decode(tokens, noise, decode_steps, decode_cfg, progress,
                                       (start + share * TOKEN_SHARE, start + share)))
            indices.append(tokens.cpu())
        return Generated(torch.cat(images), torch.cat(indices), ids.tolist())

    # ------------------------------------------------------------------ tokens and reconstruction
    def image_tensor(self, image: Any, *, max_pixels: int | None = None, name: str = "image",
                     notes: list[str] | None = None) -> Tensor:
        """A path / bytes / PIL image -> (1, 3, S, S) in [-1, 1] on the tokenizer's device and dtype: centre
        square, resized to the tokenizer's resolution. ``max_pixels`` refuses larger pictures before decoding;
        errors call the input ``name`` (with its file name, never its folder); what was done to the picture
        (transparency flattened on white) is appended to ``notes``."""
        from pathlib import Path

        from runkit.images import FLATTENED_ON_WHITE, load_image, pil_to_tensor

        label = f"{name} ({Path(image).name})" if isinstance(image, (str, os.PathLike)) else name
        picture = load_image(image, max_pixels=max_pixels, exif_transpose=True, name=label)
        if notes is not None and picture.info.get(FLATTENED_ON_WHITE):
            notes.append(f"{name} has transparent areas: they were flattened on white")
        tensor = pil_to_tensor(picture, self.tokenizer.config.image_size, train=False)
        return tensor[None].to(device=self.tokenizer.device, dtype=next(self.tokenizer.parameters()).dtype)

    def _image_batch(self, images: Any) -> Tensor:
        if isinstance(images, Tensor):
            batch = images[None] if images.dim() == 3 else images
            return batch.to(device=self.tokenizer.device, dtype=next(self.tokenizer.parameters()).dtype)
        if isinstance(images, (list, tuple)):
            return torch.cat([self.image_tensor(image) for image in images])
        return self.image_tensor(images)

    def tokenize(self, images: Any) -> Tensor:
        """Images (one PIL image / path / bytes, a list of them, or a (B, 3, S, S) tensor in [-1, 1]) -> token
        indices (B, N) int64 on the CPU."""
        with torch.inference_mode():
            return self.tokenizer.tokenize(self._image_batch(images)).cpu()

    def decode(self, indices: Tensor, *, seed: int = 0, steps: int | None = None, cfg: float | None = None,
               shared_noise: bool = False, progress: ProgressFn | None = None) -> Tensor:
        """Token indices (B, N) -> images (B, 3, S, S) in [-1, 1] on the CPU, the starting noise drawn from
        ``seed`` (one draw for every row with ``shared_noise``, so rows differ only by their tokens)."""
        rng = torch.Generator().manual_seed(seed)
        noise = self._noise(1 if shared_noise else indices.shape[0], rng).expand(indices.shape[0], -1, -1, -1)
        return self._decode(indices, noise, steps, cfg, progress, (0.0, 1.0))

    def search_tokens(self, images: Any, *, passes: int = 2, seed: int = 0, steps: int | None = None,
                      cfg: float | None = None, progress: ProgressFn | None = None) -> CodeSearchResult:
        """Images (as :meth:`tokenize` takes them) -> code search (:func:`tokenizer.search_code`) from the
        encoder's tokens, on the CPU: ``.indices`` (B, N) are tokens of as many bits as :meth:`tokenize`'s,
        chosen so that :meth:`decode` with this ``seed``, ``steps`` and ``cfg`` comes closer to the images;
        ``.flips`` counts the bits changed. Costs ``passes`` decodes per bit per image."""
        batch = self._image_batch(images)
        noise = self._noise(batch.shape[0], torch.Generator().manual_seed(seed))

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(done / total, f"searching the tokens: {done}/{total} bit flips tried")

        with torch.inference_mode():
            found = search_code(self.tokenizer, batch, passes=passes, noise=noise.to(self.tokenizer.device),
                                steps=steps, cfg=cfg, progress=report)
        return CodeSearchResult(**{name: value.cpu() if isinstance(value, Tensor) else value
                                   for name, value in vars(found).items()})

    def reconstruct(self, image: Any, *, seed: int = 0, steps: int | None = None,
                    cfg: float | None = None, search_passes: int = 0) -> Image.Image:
        """One image (PIL, path, bytes or a (1, 3, S, S) tensor) -> tokens -> the decoded PIL image.
        ``search_passes`` > 0: the tokens come from :meth:`search_tokens` (closer, slower to find)."""
        image = self._image_batch(image)[:1]
        indices = (self.search_tokens(image, passes=search_passes, seed=seed, steps=steps, cfg=cfg).indices
                   if search_passes else self.tokenize(image))
        return to_pil(self.decode(indices, seed=seed, steps=steps, cfg=cfg))[0]

    def _noise(self, rows: int, rng: torch.Generator) -> Tensor:
        size = self.tokenizer.config.image_size
        return torch.randn(rows, 3, size, size, generator=rng)

    def _decode(self, indices: Tensor, noise: Tensor, steps: int | None, cfg: float | None,
                progress: ProgressFn | None, span: tuple[float, float]) -> Tensor:
        def report(step: int, total: int) -> None:
            if progress is not None:
                progress(span[0] + (span[1] - span[0]) * step / total, f"decoding: step {step}/{total}")

        with torch.inference_mode():
            images = self.tokenizer.decode(indices.to(self.tokenizer.device), steps=steps, cfg=cfg, noise=noise,
                                           progress=report)
        return images.float().cpu()
