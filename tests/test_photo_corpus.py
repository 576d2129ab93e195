"""The Debian photo corpus on small fake packages: fetching and its cache, the non-photo rule,
deduplication, manifest and licences, splits by file, reserved packages, skips and fallbacks.

Nothing is downloaded: apt is replaced by a fake ``subprocess.run`` for imagedata.debian, and
the corpus builder's ``fetch_package`` by one that serves folders built in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw
from scipy import ndimage

from imagedata import debian, photo_corpus
from imagedata.debian import (
    AptUnavailableError,
    DebianFetchError,
    DebianPackage,
    UnknownPackageError,
    fetch_package,
    licence_from_copyright,
    named_file_licences,
    package_licence,
)
from imagedata.photo_corpus import build_photo_corpus, find_duplicates, non_photo_reason, split_of


def _quiet(_message: str) -> None:
    pass


# ---------------------------------------------------------------- fixtures: pictures


def gradient() -> Image.Image:
    y, x = np.mgrid[0:300, 0:400]
    return Image.fromarray(np.stack([x * 255 / 399, y * 255 / 299, (x + y) * 255 / 698], -1).round().astype(np.uint8))


def flat_shapes() -> Image.Image:
    img = Image.new("RGB", (400, 300), (30, 120, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle((40, 40, 200, 180), fill=(250, 200, 0))
    draw.ellipse((180, 100, 360, 280), fill=(200, 30, 60))
    draw.polygon([(10, 290), (100, 200), (190, 290)], fill=(20, 160, 60))
    return img


def natural_texture(seed: int = 0) -> Image.Image:
    """Noise with a 1/f-like spectrum plus sensor noise: statistically like a photograph."""
    rng = np.random.default_rng(seed)
    layers = sum(ndimage.zoom(rng.normal(size=(320 // k, 320 // k, 3)), (k, k, 1), order=1) * k ** 0.5
                 for k in (2, 4, 8, 16, 32))
    return Image.fromarray(np.clip(128 + 18 * layers + rng.normal(0, 3, layers.shape), 0, 255).astype(np.uint8))


def binary_mask() -> Image.Image:
    img = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(img).ellipse((50, 50, 250, 250), fill=255)
    return img


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)())


# ---------------------------------------------------------------- the non-photo rule


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_photographs_pass_the_rule(name):
    assert non_photo_reason(photo(name)) is None


def test_a_natural_texture_passes_the_rule():
    assert non_photo_reason(natural_texture()) is None


@pytest.mark.parametrize("make, words", [
    (gradient, "smooth gradient"),
    (flat_shapes, "flat fills"),
    (binary_mask, "pure black nor pure white"),
    (lambda: photo("astronaut").resize((200, 200)), "smaller than 256 px"),
])
def test_non_photographs_are_rejected_with_a_reason(make, words):
    reason = non_photo_reason(make())
    assert reason is not None and words in reason


# ---------------------------------------------------------------- deduplication and splits


def _candidate(name: str, path: str, img: Image.Image) -> photo_corpus.Candidate:
    source = photo_corpus.Source(name, "1", "debian", "MIT", Path("."), (path,), {path: "MIT"})
    grey = np.asarray(photo_corpus._shrink(img, photo_corpus.HASH_WORKING_SIDE).convert("L"))
    return photo_corpus.Candidate(source, path, "0" * 64, img.width, img.height, grey)


def test_the_same_picture_at_two_sizes_and_a_crop_is_one_picture():
    big = photo("astronaut")
    candidates = [
        _candidate("a", "small.png", big.resize((300, 300), Image.Resampling.LANCZOS)),
        _candidate("a", "big.png", big),
        _candidate("a", "wide-crop.png", big.crop((0, 96, 512, 416))),   # 16:10 centre crop
        _candidate("a", "other.png", photo("coffee")),
    ]
    duplicates = find_duplicates(candidates, unseen=None)
    assert set(duplicates) == {0, 2}
    assert all(kept == 1 and distance <= photo_corpus.MAX_HASH_DISTANCE for kept, distance in duplicates.values())


def test_the_unseen_package_keeps_its_copy_even_when_smaller():
    big = photo("chelsea")
    candidates = [_candidate("train-pkg", "big.png", big),
                  _candidate("held-out", "small.png", big.resize((300, 200), Image.Resampling.LANCZOS))]
    duplicates = find_duplicates(candidates, unseen="held-out")
    assert list(duplicates) == [0] and duplicates[0][0] == 1


def test_split_of_is_by_sha_and_the_unseen_package_is_whole():
    assert split_of("0" * 64, "a", "u", 0.15) == "val"
    assert split_of("f" * 64, "a", "u", 0.15) == "train"
    assert split_of("0" * 64, "u", "u", 0.15) == split_of("f" * 64, "u", "u", 0.15) == "test_unseen"
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    share = sum(split_of(sha, "a", None, 0.15) == "val" for sha in shas) / len(shas)
    assert 0.12 < share < 0.18


# ---------------------------------------------------------------- fake packages for the builder


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Quality 95 as wallpapers ship; at 75 a smooth sky loses its noise (see non_photo_reason).
    img.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files: pictures/astronaut.png
Copyright: NASA
License: public-domain
"""


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """Three fake unpacked packages, served by a fake fetch_package that records its calls."""
    root = tmp_path / "debs"
    trees = {
        "wallpapers-a": {
            "usr/share/backgrounds/astronaut.png": photo("astronaut"),
            "usr/share/backgrounds/astronaut-small.png": photo("astronaut").resize((300, 300)),
            "usr/share/backgrounds/coffee.jpg": photo("coffee"),
            "usr/share/backgrounds/texture.png": natural_texture(1),
            "usr/share/backgrounds/gradient.png": gradient(),
            "usr/share/backgrounds/shapes.png": flat_shapes(),
        },
        "wallpapers-b": {
            "usr/share/pixmaps/rocket.jpg": photo("rocket"),
            "usr/share/pixmaps/texture.png": natural_texture(2),
            "usr/share/pixmaps/chelsea.png": photo("chelsea"),
        },
        "held-out": {
            "usr/share/doc/held-out/chelsea-copy.png": photo("chelsea").resize((400, 266)),
            "usr/share/doc/held-out/texture.png": natural_texture(3),
            "usr/share/doc/held-out/mask.png": binary_mask(),
        },
    }
    served = {}
    for name, files in trees.items():
        tree = root / name
        for relative, img in files.items():
            _save(img, tree / relative)
        served[name] = DebianPackage(name, "1.0-1", "GPL-2+", tree, f"{name}_1.0-1_all.deb", "0" * 64)
    (root / "wallpapers-a/usr/share/backgrounds/broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "wallpapers-a/usr/share/backgrounds/link.png").symlink_to("coffee.jpg")
    copyright_file = root / "wallpapers-a/usr/share/doc/wallpapers-a/copyright"
    copyright_file.parent.mkdir(parents=True)
    copyright_file.write_text(COPYRIGHT)   # names pictures/astronaut.png: matched by file name
    calls = []

    def fake_fetch(name, cache_dir=None):
        calls.append(name)
        if name not in served:
            raise UnknownPackageError(f"apt knows no package {name!r}")
        return served[name]

    monkeypatch.setattr(photo_corpus, "fetch_package", fake_fetch)
    return {"names": tuple(trees), "calls": calls}


def _build(out, names, **kwargs):
    return build_photo_corpus(out, names, unseen="held-out", log=_quiet, **{"bundled": False, **kwargs})


def test_corpus_filters_dedups_and_records_everything(tmp_path, packages):
    out = tmp_path / "corpus"
    manifest = _build(out, packages["names"])
    kept = {(record["package"], record["path"].rsplit("/", 1)[-1]) for record in manifest["files"]}
    assert kept == {
        ("wallpapers-a", "astronaut.png"), ("wallpapers-a", "coffee.jpg"), ("wallpapers-a", "texture.png"),
        ("wallpapers-b", "rocket.jpg"), ("wallpapers-b", "texture.png"),
        ("held-out", "chelsea-copy.png"), ("held-out", "texture.png"),
    }
    dropped = {record["path"].rsplit("/", 1)[-1]: record["duplicate_of"] for record in manifest["duplicates"]}
    assert dropped == {"astronaut-small.png": "wallpapers-a:usr/share/backgrounds/astronaut.png",
                       # the held-out package keeps its (smaller) copy, so it stays complete and unseen
                       "chelsea.png": "held-out:usr/share/doc/held-out/chelsea-copy.png"}
    stages = {record["path"].rsplit("/", 1)[-1]: record["stage"] for record in manifest["rejected"]}
    assert stages == {"gradient.png": "non_photo", "shapes.png": "non_photo", "mask.png": "non_photo",
                      "broken.jpg": "unreadable", "link.png": "link"}
    assert "not an image format" in next(r["reason"] for r in manifest["rejected"] if r["stage"] == "unreadable")
    counts = {record["name"]: record for record in manifest["packages"]}
    assert counts["wallpapers-a"] | {"found": 8, "links": 1, "unreadable": 1, "non_photo": 2,
                                     "duplicates": 1, "kept": 3} == counts["wallpapers-a"]

    for record in manifest["files"]:
        copy = out / record["file"]
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == record["sha256"]
        with Image.open(copy) as img:
            assert img.size == (record["width"], record["height"])
        assert record["version"] == "1.0-1" and record["licence"]
        assert record["file"].startswith(f"{record['split']}/{record['package']}/")
    licences = {record["path"].rsplit("/", 1)[-1]: record["licence"]
                for record in manifest["files"] if record["package"] == "wallpapers-a"}
    # A copyright stanza naming the file wins over the package's first licence.
    assert licences == {"astronaut.png": "public-domain", "coffee.jpg": "GPL-2+", "texture.png": "GPL-2+"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    sources = (out / "SOURCES.md").read_text()
    for name in packages["names"]:
        assert f"## {name} 1.0-1" in sources
    assert "public-domain" in sources


def test_splits_are_by_file_and_the_unseen_package_is_held_out_whole(tmp_path, packages):
    manifest = _build(tmp_path / "corpus", packages["names"], val_fraction=0.5)
    by_split: dict[str, set[str]] = {}
    for record in manifest["files"]:
        by_split.setdefault(record["split"], set()).add(record["sha256"])
        assert (record["split"] == "test_unseen") == (record["package"] == "held-out")
    splits = list(by_split.values())
    assert all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1:])
    assert manifest["split_sizes"]["test_unseen"] == 2
    assert sum(manifest["split_sizes"].values()) == len(manifest["files"])


def test_the_split_folders_load_as_an_image_folder(tmp_path, packages):
    from imagedata import ImageFolderDataset

    out = tmp_path / "corpus"
    manifest = _build(out, packages["names"])
    dataset = ImageFolderDataset(out / "test_unseen", image_size=32, train=False)
    assert dataset.class_names == ["held-out"] and len(dataset) == manifest["split_sizes"]["test_unseen"]
    image, label = dataset[0]
    assert tuple(image.shape) == (3, 32, 32) and label == 0


def test_a_rerun_writes_nothing_and_a_foreign_folder_is_refused(tmp_path, packages):
    out = tmp_path / "corpus"
    first = _build(out, packages["names"])
    stamp = (out / "manifest.json").stat().st_mtime_ns
    messages = []
    second = build_photo_corpus(out, packages["names"], unseen="held-out", bundled=False, log=messages.append)
    assert second == first and (out / "manifest.json").stat().st_mtime_ns == stamp
    assert "nothing written" in messages[-1]

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("mine")
    packages["calls"].clear()
    with pytest.raises(FileExistsError, match="not an earlier output"):
        _build(foreign, packages["names"])
    assert packages["calls"] == []   # refused before anything is fetched
    (out / "train" / "stray.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="stray.png"):
        _build(out, packages["names"])


def test_the_bundled_photographs_join_the_packages_and_are_deduplicated_against_them(tmp_path, packages):
    manifest = _build(tmp_path / "corpus", packages["names"], bundled=True)
    by_package = {}
    for record in manifest["files"]:
        by_package.setdefault(record["package"], set()).add(record["path"].rsplit("/", 1)[-1])
    assert {"scikit-image", "scikit-learn"} <= set(by_package)
    assert "china.jpg" in by_package["scikit-learn"]
    # chelsea is both a bundled photo and (a copy) in the unseen package: it is kept once only
    chelsea = [record for record in manifest["files"] if "chelsea" in record["path"]]
    assert len(chelsea) == 1
    assert any("chelsea" in record["path"] for record in manifest["duplicates"])
    assert {record["split"] for record in manifest["files"] if record["package"] == "scikit-image"} <= {"train", "val"}


@pytest.mark.parametrize("name", ["mate-backgrounds", "ukui-wallpapers", "fluent-icon-theme", "kde-fluent-walls"])
def test_reserved_packages_are_refused_before_any_fetch(tmp_path, packages, name):
    with pytest.raises(ValueError, match="reserved for independent evaluation"):
        build_photo_corpus(tmp_path / "corpus", ("wallpapers-a", name), unseen=None, log=_quiet)
    assert packages["calls"] == []


def test_an_unknown_package_is_recorded_and_the_rest_is_built(tmp_path, packages):
    messages = []
    manifest = build_photo_corpus(tmp_path / "corpus", ("wallpapers-b", "no-such-package"), unseen=None,
                                  bundled=False, log=messages.append)
    assert manifest["failed_packages"] == [
        {"name": "no-such-package", "error": "apt knows no package 'no-such-package'"}]
    assert any("no-such-package" in message for message in messages)
    assert {record["package"] for record in manifest["files"]} == {"wallpapers-b"}


def test_include_and_exclude_globs_pick_the_files(tmp_path, monkeypatch):
    for relative in ("photos/a.jpg", "photos/b.PNG", "photos/notes.txt", "photos/synthetic/c.png", "icons/d.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    assert photo_corpus.list_images(tmp_path, "anything") == [
        "icons/d.png", "photos/a.jpg", "photos/b.PNG", "photos/synthetic/c.png"]
    monkeypatch.setitem(photo_corpus.INCLUDE_GLOBS, "walls", ("photos/*",))
    monkeypatch.setitem(photo_corpus.EXCLUDE_GLOBS, "walls", ("photos/synthetic/*",))
    assert photo_corpus.list_images(tmp_path, "walls") == ["photos/a.jpg", "photos/b.PNG"]


def test_unseen_must_be_one_of_the_packages(tmp_path, packages):
    with pytest.raises(ValueError, match="unseen='opencv-doc'"):
        build_photo_corpus(tmp_path / "corpus", ("wallpapers-a",), unseen="opencv-doc", log=_quiet)


def test_without_apt_the_bundled_photographs_are_used(tmp_path, monkeypatch):
    def no_apt(name, cache_dir=None):
        raise AptUnavailableError("apt-get not found")

    monkeypatch.setattr(photo_corpus, "fetch_package", no_apt)
    messages = []
    manifest = build_photo_corpus(tmp_path / "corpus", ("wallpapers-a",), unseen=None, log=messages.append)
    assert any("scikit-image and scikit-learn" in message for message in messages)
    assert manifest["failed_packages"] == [{"name": "wallpapers-a", "error": "apt-get not found"}]
    assert {record["origin"] for record in manifest["files"]} == {"scikit-image", "scikit-learn"}
    names = {record["path"].rsplit("/", 1)[-1] for record in manifest["files"]}
    assert {"astronaut.png", "coffee.png", "chelsea.png", "china.jpg", "flower.jpg"} <= names
    assert all("CC BY 2.0" in record["licence"] for record in manifest["files"] if record["origin"] == "scikit-learn")
    assert manifest["split_sizes"]["test_unseen"] == 0


# ---------------------------------------------------------------- imagedata.debian with a fake apt


class FakeApt:
    """Stands in for subprocess.run: apt-cache show, apt-get download and dpkg-deb on JSON "debs"."""

    def __init__(self, versions: dict[str, str], copyright: str | None = COPYRIGHT, fail_download: bool = False):
        self.versions, self.copyright, self.fail_download = versions, copyright, fail_download
        self.calls: list[list[str]] = []

    def __call__(self, args, cwd=None, capture_output=True, text=True, timeout=None, check=False):
        assert isinstance(args, list) and timeout is not None
        self.calls.append(args)

        def ok(stdout: str = "") -> subprocess.CompletedProcess:
            return subprocess.CompletedProcess(args, 0, stdout, "")

        if args[:2] == ["apt-cache", "show"]:
            name = args[-1]
            if name not in self.versions:
                return subprocess.CompletedProcess(args, 100, "", "E: No packages found")
            return ok(f"Package: {name}\nVersion: {self.versions[name]}\n")
        if args[:2] == ["apt-get", "download"]:
            name = args[-1]
            if self.fail_download:
                return subprocess.CompletedProcess(args, 100, "", f"E: Failed to fetch {name}: 404 Not Found")
            deb = Path(cwd) / f"{name}_{self.versions[name].replace(':', '%3a')}_all.deb"
            deb.write_text(json.dumps({"Package": name, "Version": self.versions[name]}))
            return ok()
        if args[:2] == ["dpkg-deb", "-f"]:
            return ok(json.loads(Path(args[2]).read_text())[args[3]] + "\n")
        if args[:2] == ["dpkg-deb", "-x"]:
            name = json.loads(Path(args[2]).read_text())["Package"]
            doc = Path(args[3]) / "usr/share/doc" / name
            doc.mkdir(parents=True)
            if self.copyright is not None:
                (doc / "copyright").write_text(self.copyright)
            _save(Image.new("RGB", (4, 4)), Path(args[3]) / "usr/share/backgrounds/a.png")
            return ok()
        raise AssertionError(f"unexpected command {args}")


@pytest.fixture
def apt(monkeypatch):
    def install(fake: FakeApt) -> FakeApt:
        monkeypatch.setattr(debian.shutil, "which", lambda tool: f"/usr/bin/{tool}")
        monkeypatch.setattr(debian.subprocess, "run", fake)
        return fake

    return install


def test_fetch_unpacks_once_and_reuses_the_cache(tmp_path, apt):
    fake = apt(FakeApt({"walls": "1:2.0-3"}))
    first = fetch_package("walls", tmp_path)
    assert (first.name, first.version, first.licence) == ("walls", "1:2.0-3", "GPL-2+")
    assert first.root == tmp_path / "walls_1%3a2.0-3" / "tree"
    assert (first.root / "usr/share/backgrounds/a.png").is_file()
    assert not list(tmp_path.glob("**/*.deb"))   # unpacked, then removed
    downloads = sum(call[:2] == ["apt-get", "download"] for call in fake.calls)
    assert fetch_package("walls", tmp_path) == first
    assert sum(call[:2] == ["apt-get", "download"] for call in fake.calls) == downloads == 1


def test_fetch_errors_name_the_package(tmp_path, apt):
    apt(FakeApt({}))
    with pytest.raises(UnknownPackageError, match="no-such-walls"):
        fetch_package("no-such-walls", tmp_path)
    with pytest.raises(UnknownPackageError, match="not a valid Debian package name"):
        fetch_package("-oDebug=1", tmp_path)
    apt(FakeApt({"walls": "2.0"}, fail_download=True))
    with pytest.raises(DebianFetchError, match="downloading package 'walls'.*Failed to fetch"):
        fetch_package("walls", tmp_path)
    assert list(tmp_path.iterdir()) == []   # no half-fetched folder left behind


def test_a_hanging_command_becomes_a_clear_error(tmp_path, apt, monkeypatch):
    apt(FakeApt({"walls": "2.0"}))

    def hang(args, **kwargs):
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    monkeypatch.setattr(debian.subprocess, "run", hang)
    with pytest.raises(DebianFetchError, match="looking up package 'walls'.*did not finish") as caught:
        fetch_package("walls", tmp_path)
    assert not isinstance(caught.value, UnknownPackageError)


def test_without_apt_the_error_names_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    with pytest.raises(AptUnavailableError, match="scikit-image") as caught:
        fetch_package("walls", tmp_path)
    assert isinstance(caught.value, FileNotFoundError)


def test_licences_from_copyright_files(tmp_path):
    assert licence_from_copyright(COPYRIGHT) == "GPL-2+"
    assert licence_from_copyright("This package was debianized by someone.\n") is None
    assert named_file_licences(COPYRIGHT) == {"astronaut.png": "public-domain"}
    doc = tmp_path / "usr/share/doc/walls"
    assert package_licence(tmp_path, "walls").startswith("not stated")
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Images by various authors, see below.\n")
    assert package_licence(tmp_path, "walls") == "see copyright file usr/share/doc/walls/copyright"


def test_prepare_names_its_datasets_and_refuses_others():
    from imagedata.prepare import main

    with pytest.raises(SystemExit, match=r"usage: python -m imagedata.prepare \{photos,emoji,scikit-photos\}"):
        main(["faces"])
