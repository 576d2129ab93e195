"""Train the class vocabularies that map free-text prompts to class ids.

    python -m generator.build_vocab classes=imagenet          # writes generator/vocab/imagenet.{model,json}
    python -m generator.build_vocab classes=digits
    python -m generator.build_vocab classes=imagenet check=true   # rebuild and compare, write nothing
    python -m generator.build_vocab classes=folder:/data/imagenet/train out_dir=runs/vocab

The shipped models in generator/vocab/ are exactly what this command writes: training is
deterministic (one thread, unshuffled input), and the JSON beside each model records the
sha256 of the class list, of the training text and of the model, the settings and the
sentencepiece version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from generator.prompts import ClassEntry, ClassVocabulary
from generator.prompts.classes import (VOCAB_DIR, classes_from_names, digits_classes, imagenet_classes,
                                       read_synset_names)
from generator.prompts.training import BUILTIN_SETTINGS, VocabSettings, build_record, train_piece_model


def folder_class_names(root: str | os.PathLike) -> list[str]:
    """Class folder names of an ImageFolder root, in torchvision's class-id order (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"class folder root {root} does not exist (classes=folder:<path>)")
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise ValueError(f"{root} has no class sub-folders")
    return names


def class_source(spec: str, synset_names: str | None = None) -> tuple[str, list[ClassEntry], VocabSettings]:
    """(vocabulary name, class list, settings) for classes=imagenet|digits|folder:<path>."""
    if spec == "imagenet":
        return "imagenet", imagenet_classes(), BUILTIN_SETTINGS["imagenet"]
    if spec == "digits":
        return "digits", digits_classes(), BUILTIN_SETTINGS["digits"]
    if spec.startswith("folder:"):
        mapping = read_synset_names(synset_names) if synset_names else None
        classes = classes_from_names(folder_class_names(spec.removeprefix("folder:")), mapping)
        return "folder", classes, VocabSettings.for_classes(classes)
    raise ValueError(f"classes must be imagenet, digits or folder:<path>, got {spec!r}")


def build_vocabulary(name: str, classes: list[ClassEntry], settings: VocabSettings) -> ClassVocabulary:
    return ClassVocabulary(classes, train_piece_model(classes, settings), name=name, settings=settings)


def check_vocabulary(vocab: ClassVocabulary, model_path: Path) -> list[str]:
    """Differences between a freshly built vocabulary and the files at ``model_path`` (empty: identical)."""
    shipped = json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))
    fresh = build_record(vocab.name, vocab.classes, vocab.settings, vocab.model_proto)
    problems = [f"{key} differs" for key in ("classes_sha256", "training_text_sha256", "settings")
                if shipped[key] != fresh[key]]
    if shipped["model_sha256"] != fresh["model_sha256"]:
        problems.append(
            f"model_sha256 differs (shipped with sentencepiece {shipped['sentencepiece_version']}, "
            f"rebuilt with {fresh['sentencepiece_version']})"
        )
    return problems


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_vocab")
def main(cfg: DictConfig) -> None:
    from hydra.utils import to_absolute_path

    synset_names = to_absolute_path(cfg.synset_names) if cfg.synset_names else None
    spec = str(cfg.classes)
    if spec.startswith("folder:"):
        spec = "folder:" + to_absolute_path(spec.removeprefix("folder:"))
    name, classes, settings = class_source(spec, synset_names)
    if cfg.out_dir:
        out_dir = Path(to_absolute_path(cfg.out_dir))
    elif name != "folder":
        out_dir = VOCAB_DIR
    else:
        raise ValueError("classes=folder:... writes a new vocabulary: say where with out_dir=<folder>")
    model_path = out_dir / f"{name}.model"
    vocab = build_vocabulary(name, classes, settings)
    if cfg.check:
        problems = check_vocabulary(vocab, model_path)
        if problems:
            raise SystemExit(f"{model_path} is not what this command builds: " + "; ".join(problems))
        print(f"{model_path}: identical to a fresh build ({len(classes)} classes)")
        return
    vocab.save(model_path)
    print(f"wrote {model_path} and {model_path.with_suffix('.json').name}: {vocab}")


if __name__ == "__main__":
    main()
