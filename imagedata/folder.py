"""Images in a folder tree, ``root/<class name>/**/<image>``."""

from __future__ import annotations

import os
from pathlib import Path

from .skipping import SkippingImageDataset

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jp2",
)


class ImageFolderDataset(SkippingImageDataset):
    """``root/<class name>/**/<image>``; class ids follow the sorted folder names.

    A root with no class folders but images directly inside is one class named after the
    root. ``extensions`` are matched case-insensitively.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int,
        train: bool,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        *,
        max_pixels: int | None = None,
        hflip: bool = False,
    ):
        super().__init__(image_size, train, max_pixels, hflip)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        extensions = tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in extensions)

        def images_under(folder: Path, recursive: bool) -> list[Path]:
            candidates = folder.rglob("*") if recursive else folder.iterdir()
            return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in extensions)

        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.samples: list[tuple[Path, int]] = []
        for class_dir in class_dirs:
            files = images_under(class_dir, recursive=True)
            if files:
                self.samples.extend((path, len(self.class_names)) for path in files)
                self.class_names.append(class_dir.name)
        if not self.samples:
            loose = images_under(self.root, recursive=False)
            if loose:
                self.class_names = [self.root.name]
                self.samples = [(path, 0) for path in loose]
        if not self.samples:
            raise ValueError(
                f"no images with extensions {', '.join(extensions)} found in {self.root} "
                "(expected root/<class name>/<image files>)"
            )
        self._share_bad_file_record()

    def __len__(self) -> int:
        return len(self.samples)

    def _describe(self, index: int) -> str:
        return str(self.samples[index][0])

    def _read(self, index: int) -> tuple[Path, int]:
        return self.samples[index]
