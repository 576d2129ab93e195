"""Train the class vocabularies that map free-text prompts to class ids.

    python -m generator.build_vocab classes=imagenet          # writes generator/vocab/imagenet.{model,json}
    python -m generator.build_vocab classes=digits
    python -m generator.build_vocab classes=emoji             # from the shipped generator/vocab/emoji_classes.json
    python -m generator.build_vocab classes=emoji emoji_manifest=data/emoji/manifest.json   # lexicon too
    python -m generator.build_vocab classes=imagenet check=true   # rebuild and compare, write nothing
    python -m generator.build_vocab classes=folder:/data/imagenet/train out_dir=runs/vocab

The shipped models in generator/vocab/ are exactly what this command writes: training is
deterministic (one thread, unshuffled input), and the JSON beside each model records the
sha256 of the class list, of the training text and of the model, the settings and the
sentencepiece version. The emoji lexicon (``emoji_classes.json``: per class its emoji's names,
texts and CLDR keywords, and the sha256 of the manifest it came from) is written from the
dataset's manifest when ``emoji_manifest`` is given; without it the shipped lexicon is used, so a
machine without data/emoji can rebuild and check the emoji vocabulary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from generator.prompts import ClassEntry, ClassVocabulary
from generator.prompts.classes import (EMOJI_LEXICON_FILE, VOCAB_DIR, classes_from_names, digits_classes,
                                       emoji_classes, emoji_lexicon_from_manifest, imagenet_classes,
                                       read_emoji_lexicon, read_synset_names, write_emoji_lexicon)
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


def class_source(
    spec: str, synset_names: str | None = None, emoji_lexicon: dict | None = None
) -> tuple[str, list[ClassEntry], VocabSettings]:
    """(vocabulary name, class list, settings) for classes=imagenet|digits|emoji|folder:<path>.

    ``emoji_lexicon`` (default: the shipped one) is the lexicon the emoji classes come from.
    """
    if spec == "imagenet":
        return "imagenet", imagenet_classes(), BUILTIN_SETTINGS["imagenet"]
    if spec == "digits":
        return "digits", digits_classes(), BUILTIN_SETTINGS["digits"]
    if spec == "emoji":
        return "emoji", emoji_classes(emoji_lexicon), BUILTIN_SETTINGS["emoji"]
    if spec.startswith("folder:"):
        mapping = read_synset_names(synset_names) if synset_names else None
        classes = classes_from_names(folder_class_names(spec.removeprefix("folder:")), mapping)
        return "folder", classes, VocabSettings.for_classes(classes)
    raise ValueError(f"classes must be emoji, imagenet, digits or folder:<path>, got {spec!r}")


def build_vocabulary(name: str, classes: list[ClassEntry], settings: VocabSettings) -> ClassVocabulary:
    return ClassVocabulary(classes, train_piece_model(classes, settings), name=name, settings=settings)


def check_vocabulary(vocab: ClassVocabulary, model_path: Path) -> list[str]:
    """Differences between a freshly built vocabulary and the files at ``model_path`` (empty: identical)."""
    shipped = json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))
    fresh = build_record(vocab.name, vocab.classes, vocab.settings, vocab.model_proto)
    problems = [f"{key} differs" for key in ("classes_sha256", "training_text_sha256", "settings", "members_sha256")
                if shipped.get(key) != fresh.get(key)]
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
    lexicon = None
    if cfg.emoji_manifest:
        if spec != "emoji":
            raise ValueError("emoji_manifest= goes with classes=emoji")
        lexicon = emoji_lexicon_from_manifest(to_absolute_path(cfg.emoji_manifest))
    name, classes, settings = class_source(spec, synset_names, lexicon)
    if cfg.out_dir:
        out_dir = Path(to_absolute_path(cfg.out_dir))
    elif name != "folder":
        out_dir = VOCAB_DIR
    else:
        raise ValueError("classes=folder:... writes a new vocabulary: say where with out_dir=<folder>")
    model_path = out_dir / f"{name}.model"
    lexicon_path = out_dir / EMOJI_LEXICON_FILE.name
    vocab = build_vocabulary(name, classes, settings)
    if cfg.check:
        problems = check_vocabulary(vocab, model_path)
        if lexicon is not None and read_emoji_lexicon(lexicon_path) != lexicon:
            problems.append(f"{lexicon_path} differs from the lexicon of {cfg.emoji_manifest}")
        if problems:
            raise SystemExit(f"{model_path} is not what this command builds: " + "; ".join(problems))
        print(f"{model_path}: identical to a fresh build ({len(classes)} classes)")
        return
    if lexicon is not None:
        write_emoji_lexicon(lexicon, lexicon_path)
        print(f"wrote {lexicon_path}: {len(lexicon['classes'])} classes, "
              f"{sum(len(c['emoji']) for c in lexicon['classes'])} emoji")
    vocab.save(model_path)
    print(f"wrote {model_path} and {model_path.with_suffix('.json').name}: {vocab}")


if __name__ == "__main__":
    main()
