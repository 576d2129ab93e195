"""ImageNet kept in one uncompressed tar, read through a JSON index of byte offsets."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from runkit.fileio import atomic_write
from runkit.images import ImageDecodeError

from .skipping import SkippingImageDataset


def synset_of(name: str) -> str:
    """The class of a tar member: its parent folder, else the file-name prefix before '_'.

    "n01440764/n01440764_10026.JPEG" and "n01440764_10026.JPEG" both give "n01440764".
    """
    parts = name.replace("\\", "/").strip("/").split("/")
    if len(parts) > 1:
        return parts[-2]
    stem = parts[-1]
    if stem.startswith("ILSVRC2012_val"):
        raise ValueError(
            f"tar member {name!r} carries no class: ImageNet validation images must be stored "
            "as <synset>/<file> in the tar (or name files <synset>_<id>.JPEG)"
        )
    if "_" not in stem:
        raise ValueError(f"tar member {name!r} has no class folder and no '<class>_' prefix")
    return stem.split("_", 1)[0]


def write_tar_index(tar_path: str | os.PathLike, index_path: str | os.PathLike) -> list[dict]:
    """Write the JSON index [{"name", "offset", "size"}] of every regular file in an uncompressed tar."""
    entries = []
    with tarfile.open(tar_path, mode="r:") as archive:
        for member in archive:
            if member.isfile():
                entries.append({"name": member.name, "offset": member.offset_data, "size": member.size})
    atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(entries)))
    return entries


class ImageNetTarDataset(SkippingImageDataset):
    """Images stored in one uncompressed tar, located by a JSON index of byte offsets.

    The index is a list of ``{"name": str, "offset": int, "size": int}`` (offset = start of
    the member's data). Classes come from :func:`synset_of`; ids are the sorted class names
    unless ``class_index_path`` (JSON ``{synset: id}``) fixes them. The tar is opened lazily
    in each process, so DataLoader workers each hold their own handle.
    """

    def __init__(
        self,
        tar_path: str | os.PathLike,
        index_path: str | os.PathLike,
        image_size: int,
        train: bool,
        class_index_path: str | os.PathLike | None = None,
        *,
        max_pixels: int | None = None,
        hflip: bool = False,
    ):
        super().__init__(image_size, train, max_pixels, hflip)
        self.tar_path = Path(tar_path)
        index_path = Path(index_path)
        for path, what in ((self.tar_path, "tar file"), (index_path, "tar index")):
            if not path.is_file():
                raise FileNotFoundError(f"{what} not found: {path}")
        entries = json.loads(index_path.read_text())
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{index_path}: expected a non-empty JSON list of {{name, offset, size}}")
        tar_size = self.tar_path.stat().st_size
        self.entries: list[tuple[str, int, int]] = []
        for position, entry in enumerate(entries):
            try:
                name, offset, size = str(entry["name"]), int(entry["offset"]), int(entry["size"])
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{index_path}: entry {position} is not {{name, offset, size}}: {entry!r}") from error
            if offset < 0 or size <= 0 or offset + size > tar_size:
                raise ValueError(
                    f"{index_path}: entry {name!r} (offset {offset}, size {size}) lies outside "
                    f"{self.tar_path} ({tar_size} bytes)"
                )
            self.entries.append((name, offset, size))
        synsets = [synset_of(name) for name, _, _ in self.entries]
        if class_index_path is not None:
            mapping = json.loads(Path(class_index_path).read_text())
            unknown = sorted(set(synsets) - set(mapping))
            if unknown:
                raise ValueError(f"{class_index_path} has no id for classes {unknown[:5]}")
            class_to_id = {str(k): int(v) for k, v in mapping.items()}
        else:
            class_to_id = {name: i for i, name in enumerate(sorted(set(synsets)))}
        self.class_names = [""] * (max(class_to_id.values()) + 1)
        for synset, class_id in class_to_id.items():
            self.class_names[class_id] = synset
        self.labels = [class_to_id[s] for s in synsets]
        self._file = None
        self._file_pid: int | None = None
        self._share_bad_file_record()

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_file_pid"] = None
        return state

    def _describe(self, index: int) -> str:
        return f"{self.tar_path}:{self.entries[index][0]}"

    def _read(self, index: int) -> tuple[bytes, int]:
        if self._file is None or self._file_pid != os.getpid():
            self._file = open(self.tar_path, "rb")
            self._file_pid = os.getpid()
        _, offset, size = self.entries[index]
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise ImageDecodeError(f"read {len(data)} of {size} bytes at offset {offset}")
        return data, self.labels[index]
