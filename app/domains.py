"""The demo's domains: one embedded model set per kind of image (digits, emoji), chosen in the UI.

A domain names its weights, folders under the weights directory (a tokenizer, whose
``<name>_distilled/`` student is preferred when present, a MaskGIT and/or an AR generator, a
metric classifier, and optionally a generation tokenizer: the same encoder and tokens with a decoder
trained to sample rather than to average, through which Generate and Evaluate decode), the data its
Evaluate tab compares with, and the example prompts of its Generate tab. Its Reconstruct hint and
examples are the tokenizer's (:data:`app.models.TOKENIZER_DOMAINS`, keyed by the domain name). A
domain is offered only when its tokenizer and at least one generator are there; its models load on
first use (:class:`app.pipeline.DemoPipeline`), so a domain nobody picks costs nothing. ``domains`` in
``configs/app.yaml`` overrides any field of these defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

REPO_DIR = Path(__file__).resolve().parents[1]
DISTILLED_SUFFIX = "_distilled"  # <tokenizer dir>_distilled: its few-step student (stage=distill)


@dataclass(frozen=True)
class DomainSpec:
    """One domain's weights (folders under the weights dir), evaluation data and example prompts."""

    name: str  # API name: the UI's domain value and the domain tokenizer's name ("digits", "emoji")
    label: str  # shown in the UI
    tokenizer: str  # folder of the FlowMo tokenizer
    maskgit: str | None = None  # folder of the MaskGIT generator (None: none)
    ar: str | None = None  # folder of the AR generator (None: none)
    classifier: str | None = None  # folder of the metric classifier whose features the Evaluate tab uses
    # Folder of a tokenizer with the same encoder whose decoder samples (distilled toward the teacher's own
    # samples): generated tokens decode through it; None or not there: through ``tokenizer``. A decoder
    # trained toward the image averages near neighbours together (best for reconstruction); one trained
    # toward samples keeps their variety (best for generation).
    generation_tokenizer: str | None = None
    data: Mapping[str, Any] | None = None  # dataset config (imagedata.build_dataset) of Evaluate's reference
    prompts: tuple[str, ...] = ()  # example prompts of the Generate tab; the first is the prompt box's hint
    first_generator: str = "maskgit"  # the generator the tabs select first ("maskgit" / "ar"): the better one

    @classmethod
    def from_mapping(cls, name: str, values: Mapping[str, Any] | None,
                     base: "DomainSpec | None" = None) -> "DomainSpec":
        """A domain from its ``domains.<name>`` config entry; fields it leaves out come from ``base``."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"domains.{name}: unknown key(s) {unknown}; known: {sorted(known)}")
        if base is None and "tokenizer" not in values:
            raise ValueError(f"domains.{name}: a new domain needs at least tokenizer=<folder under weights_dir>")
        if "prompts" in values:
            values["prompts"] = tuple(values["prompts"] or ())
        if values.get("data") is not None:
            values["data"] = dict(values["data"])
        if base is None:
            return cls(name=name, label=str(values.pop("label", name.capitalize())), **values)
        return dataclasses.replace(base, name=name, **values)

    @property
    def generators(self) -> dict[str, str]:
        """Generator slot ("maskgit" / "ar") -> folder, for the slots this domain names, ``first_generator`` first."""
        if self.first_generator not in ("maskgit", "ar"):
            raise ValueError(f"domains.{self.name}.first_generator must be 'maskgit' or 'ar', got {self.first_generator!r}")
        slots = sorted((("maskgit", self.maskgit), ("ar", self.ar)), key=lambda item: item[0] != self.first_generator)
        return {slot: folder for slot, folder in slots if folder}

    def tokenizer_dir(self, weights_dir: str | Path) -> Path:
        """The tokenizer folder, or its distilled few-step student ``<folder>_distilled`` when that is there."""
        return embedded_tokenizer_dir(Path(weights_dir), self.tokenizer)

    def generation_tokenizer_dir(self, weights_dir: str | Path) -> Path | None:
        """The generation tokenizer's folder (its ``_distilled`` student preferred) when it is there, else None."""
        if not self.generation_tokenizer:
            return None
        path = embedded_tokenizer_dir(Path(weights_dir), self.generation_tokenizer)
        return path if path.is_dir() else None

    def missing(self, weights_dir: str | Path) -> list[str]:
        """What keeps this domain from being offered: its tokenizer, or every one of its generators."""
        weights_dir = Path(weights_dir)
        missing = []
        if not self.tokenizer_dir(weights_dir).is_dir():
            missing.append(f"{self.tokenizer}/")
        generators = self.generators
        if not any((weights_dir / folder).is_dir() for folder in generators.values()):
            missing.append(" or ".join(f"{folder}/" for folder in generators.values()) or "a generator")
        return missing

    def classifier_dir(self, weights_dir: str | Path) -> Path | None:
        """The metric classifier's folder when it is there, else None (Evaluate then uses Inception-v3)."""
        if not self.classifier:
            return None
        path = Path(weights_dir) / self.classifier
        return path if (path / "config.json").is_file() else None

    def data_root(self) -> Path | None:
        """The folder of a dataset that lives on disk (``data.root``): as given when it exists from where the
        demo was started, else under the repository; None for a dataset without a root (digits)."""
        if not self.data or not self.data.get("root"):
            return None
        root = Path(str(self.data["root"])).expanduser()
        return root if root.is_absolute() or root.exists() else REPO_DIR / root

    def reference_data(self) -> dict[str, Any]:
        """Evaluate's reference and memorization data: the domain's dataset, its root resolved, checked present."""
        if not self.data:
            raise ValueError(f"the {self.label} domain names no evaluation data: set evaluate.reference=<folder of "
                             f"real images or an .npz with mu/sigma> (or domains.{self.name}.data)")
        data = dict(self.data)
        root = self.data_root()
        if root is not None:
            if not root.is_dir():
                raise ValueError(
                    f"gFID for the {self.label} models compares with the {data.get('name', self.name)} dataset at "
                    f"{root}, which is not there: build it with `python -m imagedata.prepare {data.get('name')}` "
                    f"from the repository root, or set evaluate.reference=<folder of real images or an .npz>")
            data["root"] = str(root.resolve())
        return data


def embedded_tokenizer_dir(weights_dir: Path, name: str) -> Path:
    """``weights_dir/name``, or its distilled few-step version ``name_distilled`` when that is there."""
    distilled = weights_dir / f"{name}{DISTILLED_SUFFIX}"
    return distilled if distilled.is_dir() else weights_dir / name


# The shipped domains; configs/app.yaml's `domains:` repeats them (and may add more or change them).
DEFAULT_DOMAINS: dict[str, DomainSpec] = {
    "digits": DomainSpec(
        name="digits", label="Digits", tokenizer="tokenizer", maskgit="maskgit", ar="ar",
        classifier="digits_classifier", data={"name": "digits"},
        prompts=("a seven and a three", "zero", "two", "a nine")),
    "emoji": DomainSpec(
        name="emoji", label="Emoji", tokenizer="emoji_tokenizer", maskgit="emoji_maskgit", ar="emoji_ar",
        classifier="emoji_classifier", data={"name": "emoji", "root": "data/emoji", "val_split": "val"},
        generation_tokenizer="emoji_tokenizer_sampling",
        prompts=("a cat", "pizza", "rocket", "red heart", "a flag"), first_generator="ar"),
}


def domains_from_mapping(values: Mapping[str, Any] | None) -> dict[str, DomainSpec]:
    """``domains`` of configs/app.yaml: the shipped domains, each field a config entry sets overriding
    the default; a name not shipped adds a domain (it needs ``tokenizer``)."""
    domains = dict(DEFAULT_DOMAINS)
    for name, entry in dict(values or {}).items():
        domains[name] = DomainSpec.from_mapping(name, entry, DEFAULT_DOMAINS.get(name))
    return domains


def available_domains(weights_dir: str | Path, domains: Mapping[str, DomainSpec]) -> list[str]:
    """The domains whose tokenizer and at least one generator are in ``weights_dir``, in config order."""
    return [name for name, spec in domains.items() if not spec.missing(weights_dir)]


def domain_unavailable_message(name: str, weights_dir: str | Path, domains: Mapping[str, DomainSpec]) -> str:
    """Why ``name`` cannot be served: unknown, or which of its weights are missing; and what can be."""
    offered = available_domains(weights_dir, domains)
    choose = f"available: {', '.join(offered)}" if offered else "no domain's weights are there"
    if name not in domains:
        return f"unknown domain {name!r}; domains: {', '.join(domains)} ({choose})"
    missing = domains[name].missing(weights_dir)
    return (f"domain {name!r} is not available: {' and '.join(missing)} missing in {weights_dir} "
            f"(app/weights/README.md says how to train them; {choose})")
