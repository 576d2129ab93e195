"""DemoPipeline: everything the demo does, as plain Python the tests call directly.

One object holds the loaded model set (:mod:`app.models`, swappable at run time by the model
picker, :mod:`app.picker`) and the caches built on first use (prompt vocabulary, LPIPS, work
directory); each operation lives in its own module: :mod:`app.generate`, :mod:`app.reconstruct`,
:mod:`app.edit_tokens`, :mod:`app.evaluate`. They generate, tokenize and decode through the public
:class:`generator.Pipeline` (:meth:`DemoPipeline.pipeline`), so the demo's images are the ones a
Python caller gets for the same seed. No Gradio here: ``app/ui.py`` only wires these methods to widgets.

Every user-facing input is checked against :class:`~app.limits.DemoLimits` (:mod:`app.checks`);
bad input raises ``ValueError`` (or a subclass) with a message meant for the person at the browser.
Long work reports through ``progress(fraction, message)`` callbacks.
"""

from __future__ import annotations

import copy
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from generator.pipeline import Pipeline

from . import edit_tokens, evaluate, generate, reconstruct
from .checks import resolve_classes
from .decoding import ProgressFn
from .limits import check_int
from .models import (DEFAULT_WEIGHTS_DIR, GENERATOR_LABELS, LoadedModels, TokenizerChoice, load_models,
                     status_line, tokenizer_choice)
from .picker import load_picked
from .settings import DemoSettings


class DemoPipeline:
    """The demo's operations over one set of models (swappable at run time with :meth:`reload`).

    Each request takes a snapshot of the model set, so a reload never mixes sets within one.
    """

    def __init__(self, models: LoadedModels, settings: DemoSettings | None = None):
        self.settings = settings or DemoSettings()
        self.limits = self.settings.limits
        self._models = models
        self._lock = threading.Lock()
        self._vocabulary: Any = None
        self._lpips: Any = None
        self._work_dir: Path | None = Path(self.settings.work_dir) if self.settings.work_dir else None

    @classmethod
    def load(cls, tokenizer: str | None = None, tokenizer_preset: str | None = None, maskgit: str | None = None,
             ar: str | None = None, *, photo_tokenizer: str | bool | None = None,
             weights_dir: str | Path = DEFAULT_WEIGHTS_DIR, settings: DemoSettings | None = None) -> "DemoPipeline":
        settings = settings or DemoSettings()
        return cls(load_models(tokenizer, tokenizer_preset, maskgit, ar, photo_tokenizer=photo_tokenizer,
                               weights_dir=weights_dir, settings=settings), settings)

    # ------------------------------------------------------------------ model set
    @property
    def models(self) -> LoadedModels:
        return self._models

    def reload(self, tokenizer: str | None = None, tokenizer_preset: str | None = None,
               maskgit: str | None = None, ar: str | None = None,
               weights_dir: str | Path = DEFAULT_WEIGHTS_DIR) -> str:
        """Load another model set for EVERY user of this server (the UI's model picker, off unless
        ``model_picker=true``); requests in flight finish on the old one. Empty paths: the embedded models.

        Client-typed paths must lie under ``settings.model_dirs``, checked before anything is built;
        a refused path gets one message whether it exists or not. A failed load keeps the old set
        and frees what it built. The extra tokenizers stay as they are: they do not depend on the main set.
        """
        models = load_picked(self.settings, tokenizer, tokenizer_preset, maskgit, ar, weights_dir)
        with self._lock:
            self._models = replace(models, extra_tokenizers=self._models.extra_tokenizers,
                                   extra_tokenizer_sources=self._models.extra_tokenizer_sources)
            self._vocabulary = None
        return self.status()

    @property
    def class_names(self) -> list[str]:
        return list(self._models.class_names)

    @property
    def generator_names(self) -> list[str]:
        """Loaded generators as shown in the UI ("MaskGIT", "AR")."""
        return [GENERATOR_LABELS[slot] for slot in self._models.generators]

    def generator_defaults(self, generator: str) -> tuple[int, float, float]:
        """(steps, cfg, temperature) a generator samples with unless told otherwise: its saved defaults."""
        return self._models.generator_defaults(generator)

    def pipeline(self, generator: str | None = None, tokenizer: str | None = None) -> Pipeline:
        """The public pipeline the demo's operations run: a loaded generator (label or slot; None: none) over
        the main tokenizer, or a loaded tokenizer (API name or label; None: the main one) alone."""
        models = self._models
        if generator is not None:
            return Pipeline(models.generators[models.resolve_generator(generator)], models.tokenizer)
        return Pipeline(None, models.tokenizers[models.resolve_tokenizer(tokenizer)])

    def tokenizer_choices(self) -> list[TokenizerChoice]:
        """Every loaded tokenizer, the main one first."""
        models = self._models
        return [tokenizer_choice(models, name) for name in models.tokenizers]

    def tokenizer_choice(self, tokenizer: str | None = None) -> TokenizerChoice:
        """A loaded tokenizer (API name or label; None: the main one) with its examples and decoder defaults."""
        return tokenizer_choice(self._models, tokenizer)

    def status(self) -> str:
        return status_line(self._models, self.settings)

    # ------------------------------------------------------------------ compilation
    def compile_choice(self) -> Any:
        """``settings.compile`` resolved (:mod:`runkit.acceleration`): auto stays eager, since a demo request
        is one short batch and a compile warm-up (tens of seconds on a CPU) would not pay back."""
        from runkit.acceleration import choose_compile

        return choose_compile(self.settings.compile, self.settings.torch_device(), 1, unit="batch per request")

    def compile_in_background(self) -> threading.Thread:
        """Compile copies of the main tokenizer and the generators in a thread, warm them up with one
        generate + decode at their saved defaults, then swap them in; until then (and if compiling
        fails) requests run on the eager models, so no request waits on the warm-up. A model set loaded
        by the picker meanwhile is kept, not replaced."""
        from runkit.acceleration import compile_for_inference

        eager = self._models

        def work() -> None:
            try:
                compiled = replace(eager, tokenizer=copy.deepcopy(eager.tokenizer),
                                   generators={slot: copy.deepcopy(g) for slot, g in eager.generators.items()})
                notes = compile_for_inference([compiled.tokenizer, *compiled.generators.values()])
                for model in compiled.generators.values():  # as the requests run
                    Pipeline(model, compiled.tokenizer).generate([0])
                if not compiled.generators:
                    size = compiled.tokenizer.config.image_size
                    Pipeline(None, compiled.tokenizer).reconstruct(torch.zeros(1, 3, size, size))
            except Exception as error:  # a failed compile leaves the eager models serving
                print(f"compile: failed ({type(error).__name__}: {error}); serving the eager models", flush=True)
                return
            with self._lock:
                if self._models is eager:
                    self._models = compiled
            print("compile: warm-up done; requests now use the compiled models"
                  + "".join(f"; {note}" for note in notes), flush=True)

        thread = threading.Thread(target=work, name="compile-warm-up", daemon=True)
        thread.start()
        return thread

    def work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="flowmo-demo-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def resolve_classes(self, classes: Sequence[int | str] | None) -> list[int]:
        """Class ids from ids or names (the UI's multi-select sends names), checked against the model."""
        return resolve_classes(self._models, classes)

    # ------------------------------------------------------------------ prompts
    def vocabulary(self):
        """The prompt vocabulary of the loaded classes: a shipped one when the classes are digits or
        ImageNet, else trained once on the class names and cached in the work directory."""
        from generator.prompts import ClassVocabulary

        with self._lock:
            if self._vocabulary is None:
                names = self._models.class_names
                if not names:
                    raise ValueError("no generator is loaded, so there are no classes to match prompts against")
                self._vocabulary = ClassVocabulary.for_class_names(names, cache_dir=self.work_dir() / "vocab")
            return self._vocabulary

    def classes_for_prompt(self, prompt: str) -> list[int]:
        """Every class a prompt names, in order ("a seven and a three" -> [7, 3]): the matcher
        ``generator.sample prompt=...`` uses (NoMatchError / PromptError on bad text)."""
        return self.vocabulary().classes_for_prompt(prompt)

    def example_prompt(self) -> str | None:
        """A prompt naming loaded classes, for hints ("a seven and a three"); None without a generator."""
        return self.vocabulary().example_prompt if self._models.class_names else None

    def match_prompt(self, prompt: str, top_k: int = 5) -> list[tuple[int, str, float]]:
        """Free text -> [(class_id, name, score)] best first (NoMatchError / PromptError on bad text)."""
        top_k = check_int("top_k", top_k, 1, self.limits.max_prompt_matches)
        return [(m.class_id, m.name, float(m.score)) for m in self.vocabulary().match(prompt, top_k=top_k)]

    # ------------------------------------------------------------------ operations
    def generate(self, classes: Sequence[int | str], generator: str = "MaskGIT", samples_per_class: int = 1,
                 steps: int | None = None, cfg: float | None = None, temperature: float | None = None, seed: int = 0,
                 decode_steps: int | None = None, decode_cfg: float | None = None,
                 progress: ProgressFn | None = None) -> generate.GenerationResult:
        """Class ids or names -> generated images (:func:`app.generate.generate`)."""
        return generate.generate(self._models, self.limits, self.work_dir(), classes, generator, samples_per_class,
                                 steps, cfg, temperature, seed, decode_steps, decode_cfg, progress)

    def lpips_metric(self):
        """The configured LPIPS metric (built once), or None when no backbone weights are configured."""
        with self._lock:
            if self._lpips is None:
                self._lpips = reconstruct.build_lpips_metric(self.settings, self._models.tokenizer.device)
            return self._lpips

    def reconstruct(self, image: Any, decode_steps: int | None = None, decode_cfg: float | None = None,
                    seed: int = 0, tokenizer: str | None = None,
                    progress: ProgressFn | None = None) -> reconstruct.ReconstructionResult:
        """Image -> tokens -> reconstruction with its metrics (:func:`app.reconstruct.reconstruct`)."""
        return reconstruct.reconstruct(self._models, self.limits, self.lpips_metric, image, decode_steps, decode_cfg,
                                       seed, tokenizer, progress)

    def edit_tokens(self, image_a: Any, image_b: Any = None, operation: str = "swap", start: int = 0,
                    end: int | None = None, fraction: float = 0.25, alpha: float = 0.5, seed: int = 0,
                    decode_steps: int | None = None, decode_cfg: float | None = None,
                    progress: ProgressFn | None = None) -> edit_tokens.TokenEditResult:
        """Edit the tokens of one or two images and decode them (:func:`app.edit_tokens.edit_tokens`)."""
        return edit_tokens.edit_tokens(self._models, self.limits, image_a, image_b, operation, start, end, fraction,
                                       alpha, seed, decode_steps, decode_cfg, progress)

    def evaluate(self, num_samples: int = 50, generator: str = "MaskGIT", steps: int | None = None,
                 cfg: float | None = None, temperature: float | None = None, decode_steps: int | None = None,
                 decode_cfg: float | None = None,
                 seed: int = 0, progress: ProgressFn | None = None) -> evaluate.EvaluationResult:
        """A small, resumable gFID run (:func:`app.evaluate.evaluate`)."""
        return evaluate.evaluate(self._models, self.settings, self.work_dir(), num_samples, generator, steps, cfg,
                                 temperature, decode_steps, decode_cfg, seed, progress)
