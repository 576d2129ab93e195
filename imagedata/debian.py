"""Fetch a Debian package's files without installing it: ``apt-get download``, then ``dpkg-deb -x``.

Nothing is installed and no root is needed: the ``.deb`` is downloaded into the cache
folder (default ``~/.cache/flowmo/debian``) and unpacked there. Each package lives in
``<cache>/<name>_<version>/`` (``tree/`` holds the unpacked files, ``package.json`` the
version, licence and the ``.deb``'s sha256). ``package.json`` is written last, so a folder
without it is an interrupted fetch and is redone; a complete one is reused without touching
the network again except to ask apt which version is current. The ``.deb`` itself is deleted
once unpacked (its files are all in ``tree/``), which halves the disk used.

Every command runs with an explicit argument list and a timeout, and its return code is checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from runkit.fileio import file_sha256

__all__ = [
    "DEFAULT_CACHE",
    "AptUnavailableError",
    "DebianFetchError",
    "UnknownPackageError",
    "DebianPackage",
    "fetch_package",
    "candidate_version",
    "licence_from_copyright",
    "package_licence",
    "named_file_licences",
    "file_licences",
]

DEFAULT_CACHE = Path("~/.cache/flowmo/debian")
QUERY_TIMEOUT_S = 120
DOWNLOAD_TIMEOUT_S = 1800     # the largest package used here is ~250 MB
EXTRACT_TIMEOUT_S = 900
# Debian policy 5.6.1: lower-case letters, digits, + - . ; at least two characters, starting alphanumeric.
# Checking it also keeps a name from ever reaching apt as an option ("-o...").
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_TOOLS = ("apt-get", "apt-cache", "dpkg-deb")


class AptUnavailableError(FileNotFoundError):
    """apt-get, apt-cache or dpkg-deb is not on this machine (not a Debian-based system)."""


class DebianFetchError(RuntimeError):
    """A package could not be downloaded or unpacked."""


class UnknownPackageError(DebianFetchError, LookupError):
    """apt knows no package of that name (or it has no installable version)."""


@dataclass(frozen=True)
class DebianPackage:
    """An unpacked package: its files are under ``root``."""

    name: str
    version: str
    licence: str
    root: Path
    deb: str          # file name of the .deb it was unpacked from
    deb_sha256: str


def _require_tools() -> None:
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        raise AptUnavailableError(
            f"{', '.join(missing)} not found: Debian packages can only be fetched on a Debian or Ubuntu "
            "system with apt; imagedata.photo_corpus falls back to the photographs bundled with "
            "scikit-image and scikit-learn"
        )


def _failure(args: list[str], result: subprocess.CompletedProcess) -> str:
    detail = (result.stderr or result.stdout).strip().splitlines()
    return f"`{' '.join(args)}` exited with {result.returncode}: {' | '.join(detail[-3:]) or 'no output'}"


def _run(args: list[str], timeout: float, what: str, cwd: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run ``args``; a timeout, or a non-zero exit when ``check``, becomes a DebianFetchError naming ``what``."""
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise DebianFetchError(f"{what}: `{' '.join(args)}` did not finish within {timeout:.0f} s") from error
    if check and result.returncode != 0:
        raise DebianFetchError(f"{what}: {_failure(args, result)}")
    return result


def _check_name(name: str) -> None:
    if not _PACKAGE_NAME.fullmatch(name):
        raise UnknownPackageError(f"{name!r} is not a valid Debian package name")


def candidate_version(name: str) -> str:
    """The version ``apt-get download name`` would fetch now (apt's candidate).

    Raises:
        UnknownPackageError: apt has no package ``name`` (check the spelling, or run apt-get update).
    """
    _check_name(name)
    _require_tools()
    args = ["apt-cache", "show", "--no-all-versions", name]
    result = _run(args, QUERY_TIMEOUT_S, f"looking up package {name!r}", check=False)
    if result.returncode != 0:
        raise UnknownPackageError(
            f"apt knows no package {name!r} (misspelt, not in this release, or `apt-get update` not run): "
            f"{_failure(args, result)}"
        )
    match = re.search(r"^Version:\s*(\S+)", result.stdout, flags=re.MULTILINE)
    if match is None:
        raise UnknownPackageError(f"apt lists no installable version of package {name!r}")
    return match.group(1)


def licence_from_copyright(text: str) -> str | None:
    """The first ``License:`` field of a Debian copyright file (its first line only), or None.

    In the machine-readable format (DEP-5) that is the licence of the first ``Files:`` stanza,
    normally ``Files: *``, i.e. the licence of most of the package.
    """
    match = re.search(r"^License:[ \t]*(\S[^\n]*)$", text, flags=re.MULTILINE | re.IGNORECASE)
    return match.group(1).strip() if match else None


def package_licence(root: Path, name: str) -> str:
    """The licence recorded for package ``name`` unpacked at ``root``, from its copyright file."""
    relative = f"usr/share/doc/{name}/copyright"
    path = root / relative
    # Some packages ship their doc folder as a link to a sibling package's, which is not in this tree.
    if not path.is_file():
        return f"not stated: {relative} is not in the package (a link to another package's docs?)"
    text = path.read_text(encoding="utf-8", errors="replace")
    licence = licence_from_copyright(text)
    return licence if licence else f"see copyright file {relative}"


def named_file_licences(text: str) -> dict[str, str]:
    """File name -> licence, from the DEP-5 stanzas of a copyright file that name files exactly.

    A ``Files:`` pattern without wildcards (``16.04/Bridge_by_Sander_Klootwijk.jpg``) names one
    file; its last path component is what is matched, since copyright files give paths in the
    upstream source tree, not where the package installs them. Later stanzas win, as DEP-5 says.
    Wildcard patterns (``*``, ``data/*``) are left to the package licence.
    """
    licences: dict[str, str] = {}
    for stanza in re.split(r"\n[ \t]*\n", text):
        files = re.search(r"^Files:((?:.*)(?:\n[ \t]+.*)*)", stanza, flags=re.MULTILINE)
        licence = licence_from_copyright(stanza)
        if files is None or licence is None:
            continue
        for pattern in files.group(1).split():
            name = pattern.rsplit("/", 1)[-1]
            if name and not any(char in name for char in "*?["):
                licences[name] = licence
    return licences


def file_licences(package: DebianPackage, paths: list[str]) -> dict[str, str]:
    """The licence of each file (a path inside the package): a copyright stanza naming it, else the package's."""
    copyright_file = package.root / "usr/share/doc" / package.name / "copyright"
    named = named_file_licences(copyright_file.read_text(encoding="utf-8", errors="replace")) \
        if copyright_file.is_file() else {}
    return {path: named.get(path.rsplit("/", 1)[-1], package.licence) for path in paths}


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field], QUERY_TIMEOUT_S, f"reading {field} of {deb.name}").stdout.strip()


def _entry_name(name: str, version: str) -> str:
    # An epoch's colon ("4:5.27.5-2") is awkward in paths; apt itself writes it as %3a.
    return f"{name}_{version.replace(':', '%3a')}"


def _read_entry(entry: Path) -> DebianPackage | None:
    try:
        record = json.loads((entry / "package.json").read_text(encoding="utf-8"))
        package = DebianPackage(**{**record, "root": entry / "tree"})
    except (OSError, ValueError, TypeError):
        return None
    return package if package.root.is_dir() else None


def _download_and_unpack(name: str, staging: Path) -> DebianPackage:
    """Download ``name`` into ``staging`` and unpack it to ``staging/tree``; the .deb is then removed."""
    _run(["apt-get", "download", "--", name], DOWNLOAD_TIMEOUT_S, f"downloading package {name!r}", cwd=staging)
    debs = sorted(staging.glob(f"{name}_*.deb"))
    if len(debs) != 1:
        raise DebianFetchError(
            f"downloading package {name!r}: expected one {name}_*.deb in {staging}, found {len(debs)}")
    deb = debs[0]
    if _deb_field(deb, "Package") != name:
        raise DebianFetchError(f"{deb.name} is not package {name!r}")
    version = _deb_field(deb, "Version")
    tree = staging / "tree"
    _run(["dpkg-deb", "-x", str(deb), str(tree)], EXTRACT_TIMEOUT_S, f"unpacking {deb.name}")
    package = DebianPackage(name, version, package_licence(tree, name), tree, deb.name, file_sha256(deb))
    deb.unlink()
    return package


def fetch_package(name: str, cache_dir: str | os.PathLike | None = None) -> DebianPackage:
    """Package ``name`` unpacked in the cache, downloading it only when that version is not there yet.

    Raises:
        AptUnavailableError: apt-get / dpkg-deb are missing.
        UnknownPackageError: apt knows no package ``name``.
        DebianFetchError: the download or the unpacking failed or timed out.
    """
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE).expanduser().absolute()
    version = candidate_version(name)
    entry = cache / _entry_name(name, version)
    cached = _read_entry(entry)
    if cached is not None:
        return cached
    staging = cache / f".{entry.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        fetched = _download_and_unpack(name, staging)
        # The mirror may have moved on since apt-cache answered: key the folder by what was unpacked.
        entry = cache / _entry_name(name, fetched.version)
        record = {key: value for key, value in asdict(fetched).items() if key != "root"}
        (staging / "package.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if entry.exists():
            shutil.rmtree(entry)   # an interrupted earlier fetch (no package.json), or the same files
        staging.rename(entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return DebianPackage(**{**record, "root": entry / "tree"})
