"""Prepare a dataset offline: ``python -m imagedata.prepare <name> [options]``.

    python -m imagedata.prepare photos                  # data/photo_corpus from Debian packages
    python -m imagedata.prepare photos --out /data/photos --unseen stellarium-data
    python -m imagedata.prepare scikit-photos           # the 10 bundled photos cut into region-split crops
    python -m imagedata.prepare emoji                   # data/emoji: Noto, Twemoji, OpenMoji at 72 px

``photos``: :mod:`imagedata.photo_corpus` (whole photographs from Debian packages, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x``, nothing installed; deduplicated, non-photos
filtered, split by file, one whole package held out as ``test_unseen``; manifest.json and
SOURCES.md record every file's package, version, path and licence). ``emoji``:
:mod:`imagedata.emoji` (three styles from Debian, npm and PyPI; classes are Unicode subgroups;
held-out emoji and a held-out style). ``scikit-photos``:
:mod:`imagedata.prepare_scikit_photos` (Hydra ``key=value`` options).
"""

from __future__ import annotations

import sys

DATASETS = ("photos", "emoji", "scikit-photos")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in DATASETS:
        raise SystemExit(f"usage: python -m imagedata.prepare {{{','.join(DATASETS)}}} [options]\n\n{__doc__}")
    name, options = argv[0], argv[1:]
    if name == "photos":
        from .photo_corpus import main as build_photos

        out = "data/photo_corpus"
        if "--out" in options:
            i = options.index("--out")
            out, options = options[i + 1], options[:i] + options[i + 2:]
        build_photos([out, *options])
    elif name == "emoji":
        from .emoji import main as build_emoji

        build_emoji(options)
    else:
        from .prepare_scikit_photos import main as prepare_scikit

        sys.argv = [sys.argv[0], *options]  # Hydra reads its overrides from sys.argv
        prepare_scikit()


if __name__ == "__main__":
    main()
