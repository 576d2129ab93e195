"""DemoPipeline: everything the demo does, as plain Python the tests call directly.

One object holds the loaded model sets (:mod:`app.models`): the one the demo opened with (swappable
at run time by the model picker, :mod:`app.picker`) and, for the embedded models, one per other
domain (:mod:`app.domains`: digits, emoji), each loaded on first use; and the caches built on first
use (prompt vocabularies, LPIPS, work directory). Every operation takes ``domain=`` (None: the one
the demo opened with); each lives in its own module: :mod:`app.generate`, :mod:`app.reconstruct`,
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from generator.pipeline import Pipeline

from . import edit_tokens, evaluate, generate, reconstruct
from .checks import resolve_classes
from .decoding import ProgressFn
from .limits import check_int
from .domains import available_domains, domain_unavailable_message
from .models import (DEFAULT_WEIGHTS_DIR, GENERATOR_LABELS, LoadedModels, TokenizerChoice, generation_decoder_choice,
                     load_models, status_line, tokenizer_choice, tokenizer_domain)
from .picker import load_picked
from .settings import DemoSettings


@dataclass(frozen=True)
class DomainView:
    """What the UI shows for one domain: its classes, generators, tokenizer, prompts and status."""

    name: str | None  # the domain's API name; None: models loaded from checkpoints (no domain choice)
    label: str
    class_names: list[str]
    generator_names: list[str]  # "MaskGIT", "AR"
    tokenizer: TokenizerChoice  # the domain's tokenizer: Reconstruct and Tokens decode with it
    generation_decoder: TokenizerChoice  # what Generate and Evaluate decode with (a sampling decoder, or the same)
    prompts: list[str]  # example prompts that name its classes
    prompt_hint: str  # the prompt box's placeholder
    status: str


@dataclass(frozen=True)
class PromptSelection:
    """What a prompt selects: every class it names, in order, and the matches to show for it."""

    class_ids: list[int]
    class_names: list[str]
    matches: list[Any]  # ClassMatch (class_id, name, score, .matched): the selected classes first, each with
    #                     what of it the prompt named (the emoji names of an emoji class), then the closest others

    def rows(self) -> list[list[Any]]:
        """[class, id, score, what matched] rows for a table."""
        return [[m.name, m.class_id, round(float(m.score), 3), ", ".join(getattr(m, "matched", ()))]
                for m in self.matches]


class DemoPipeline:
    """The demo's operations over the model set of a domain (swappable at run time with :meth:`reload`).

    Each request takes a snapshot of its model set, so a reload never mixes sets within one. The
    set the demo opened with serves ``domain=None``; another embedded domain loads on its first
    request (a second or less on a CPU: no compile warm-up is waited for) and stays loaded.
    """

    def __init__(self, models: LoadedModels, settings: DemoSettings | None = None):
        self.settings = settings or DemoSettings()
        self.limits = self.settings.limits
        self._models = models
        self._domains = self._available(models)
        self._others: dict[str, LoadedModels] = {}  # other domains' sets, by domain, loaded on first use
        self._generation = 0  # counts the picker's reloads: a domain loaded across one is not kept
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one domain load at a time: two first requests load it once
        self._vocabularies: dict[tuple[str, ...], Any] = {}  # by class list
        self._lpips: Any = None
        self._work_dir: Path | None = Path(self.settings.work_dir) if self.settings.work_dir else None

    @classmethod
    def load(cls, tokenizer: str | None = None, tokenizer_preset: str | None = None, maskgit: str | None = None,
             ar: str | None = None, *, photo_tokenizer: str | bool | None = None,
             weights_dir: str | Path = DEFAULT_WEIGHTS_DIR, settings: DemoSettings | None = None,
             domain: str | None = None, generation_tokenizer: str | None = None) -> "DemoPipeline":
        """Load the embedded models of ``domain`` (default ``settings.domain``) from ``weights_dir``, or the
        checkpoints given (then there is no domain choice; ``generation_tokenizer``: the FlowMo generated
        tokens decode through, None: the tokenizer)."""
        settings = settings or DemoSettings()
        return cls(load_models(tokenizer, tokenizer_preset, maskgit, ar, photo_tokenizer=photo_tokenizer,
                               weights_dir=weights_dir, settings=settings, domain=domain,
                               generation_tokenizer=generation_tokenizer), settings)

    # ------------------------------------------------------------------ model sets and domains
    @property
    def models(self) -> LoadedModels:
        """The model set the demo opened with (``domain=None``)."""
        return self._models

    def _available(self, models: LoadedModels) -> list[str]:
        """The domains offered beside an embedded set: those whose weights are in its weights dir."""
        if models.domain is None or models.weights_dir is None:
            return []
        names = available_domains(models.weights_dir, self.settings.domains)
        return names if models.domain in names else [models.domain, *names]

    @property
    def domains(self) -> list[str]:
        """The domains a request may name (API names, config order); empty for models loaded from checkpoints."""
        return list(self._domains)

    @property
    def domain(self) -> str | None:
        """The domain the demo opened with (None: models loaded from checkpoints)."""
        return self._models.domain

    def domain_label(self, domain: str) -> str:
        spec = self.settings.domains.get(domain)
        return spec.label if spec is not None else domain

    def resolve_domain(self, domain: str | None) -> str | None:
        """A domain's API name from its name or label (any case); None or empty: the one the demo opened with."""
        if domain in (None, ""):
            return self._models.domain
        key = str(domain).strip().lower()
        for name in self.settings.domains:
            if key in (name.lower(), self.domain_label(name).lower()):
                if name in self._domains:
                    return name
                break
        if not self._domains:
            raise ValueError(f"domain {domain!r} is not available: this demo serves the models loaded from "
                             f"{self._models.tokenizer_source}, not the embedded domains")
        name = next((n for n in self.settings.domains if key in (n.lower(), self.domain_label(n).lower())), key)
        raise ValueError(domain_unavailable_message(name, self._models.weights_dir, self.settings.domains))

    def models_for(self, domain: str | None = None) -> LoadedModels:
        """The model set of ``domain`` (name or label; None: the one the demo opened with), loading it on first
        use. Every set shares the extra (photo) tokenizer. With ``compile=true`` a new set is compiled in the
        background while its eager models answer, as at start."""
        models, generation = self._models, self._generation
        name = self.resolve_domain(domain)
        if name == models.domain:
            return models
        with self._lock:
            loaded = self._others.get(name)
        if loaded is not None:
            return loaded
        with self._load_lock:
            with self._lock:
                loaded = self._others.get(name)
            if loaded is not None:
                return loaded
            loaded = load_models(photo_tokenizer=False, weights_dir=models.weights_dir, settings=self.settings,
                                 domain=name)
            loaded = replace(loaded, extra_tokenizers=models.extra_tokenizers,
                             extra_tokenizer_sources=models.extra_tokenizer_sources)
            with self._lock:
                if self._generation != generation:  # the picker replaced the sets meanwhile: serve, do not keep
                    return loaded
                self._others[name] = loaded
        if self.compile_choice().value:
            self.compile_in_background(name)
        return loaded

    def reload(self, tokenizer: str | None = None, tokenizer_preset: str | None = None,
               maskgit: str | None = None, ar: str | None = None,
               weights_dir: str | Path = DEFAULT_WEIGHTS_DIR) -> str:
        """Load another model set for EVERY user of this server (the UI's model picker, off unless
        ``model_picker=true``); requests in flight finish on the old one. Empty paths: the embedded models
        (of ``settings.domain``, with the domain choice); checkpoints: those alone (no domain choice).

        Client-typed paths must lie under ``settings.model_dirs``, checked before anything is built;
        a refused path gets one message whether it exists or not. A failed load keeps the old set
        and frees what it built. The extra tokenizers stay as they are: they do not depend on the main set.
        """
        models = load_picked(self.settings, tokenizer, tokenizer_preset, maskgit, ar, weights_dir)
        with self._lock:
            self._models = replace(models, extra_tokenizers=self._models.extra_tokenizers,
                                   extra_tokenizer_sources=self._models.extra_tokenizer_sources)
            self._domains = self._available(self._models)
            self._others = {}
            self._generation += 1
        return self.status()

    @property
    def class_names(self) -> list[str]:
        return list(self._models.class_names)

    @property
    def generator_names(self) -> list[str]:
        """Loaded generators as shown in the UI ("MaskGIT", "AR")."""
        return self.generators_for()

    def generators_for(self, domain: str | None = None) -> list[str]:
        """A domain's loaded generators as shown in the UI ("MaskGIT", "AR")."""
        return [GENERATOR_LABELS[slot] for slot in self.models_for(domain).generators]

    def classes_of(self, domain: str | None = None) -> list[str]:
        """A domain's class names (the generators')."""
        return list(self.models_for(domain).class_names)

    def generator_defaults(self, generator: str, domain: str | None = None) -> tuple[int, float, float]:
        """(steps, cfg, temperature) a generator samples with unless told otherwise: its saved defaults."""
        return self.models_for(domain).generator_defaults(generator)

    def pipeline(self, generator: str | None = None, tokenizer: str | None = None,
                 domain: str | None = None) -> Pipeline:
        """The public pipeline the demo's operations run: a loaded generator (label or slot; None: none) over
        the domain's generation decoder, or a loaded tokenizer (API name or label; None: the domain's) alone."""
        if generator is not None:
            models = self.models_for(domain)
            return Pipeline(models.generators[models.resolve_generator(generator)], models.generation_decoder)
        models, name = self._tokenizer_models(tokenizer, domain)
        return Pipeline(None, models.tokenizers[name])

    # ------------------------------------------------------------------ tokenizers
    def tokenizer_options(self) -> list[tuple[str, str]]:
        """(label, API name) of every tokenizer a request may name, without loading any: each domain's (config
        order), then the extra (photo) tokenizer; for models loaded from checkpoints, theirs."""
        names = self._domains or [self._models.tokenizer_name]
        names = [*names, *self._models.extra_tokenizers]
        return [(tokenizer_domain(name).label, name) for name in names]

    def _tokenizer_models(self, tokenizer: str | None, domain: str | None) -> tuple[LoadedModels, str]:
        """(model set, tokenizer API name) of a tokenizer named by API name or label: a domain's own tokenizer
        (whatever the domain asked for), an extra one or, None or empty, the domain's."""
        if tokenizer not in (None, ""):
            key = str(tokenizer).strip().lower()
            for name in self._domains:
                if key in (name, tokenizer_domain(name).label.lower()):
                    return self.models_for(name), name
        models = self.models_for(domain)
        try:
            return models, models.resolve_tokenizer(tokenizer)
        except ValueError:
            if not self._domains:
                raise
        loaded = ", ".join(f"{name!r} ({label})" for label, name in self.tokenizer_options())
        raise ValueError(f"tokenizer {tokenizer!r} is not loaded; loaded: {loaded}")

    def tokenizer_choices(self, domain: str | None = None) -> list[TokenizerChoice]:
        """Every tokenizer of a domain's set, its own first, then the extra (photo) tokenizer."""
        models = self.models_for(domain)
        return [tokenizer_choice(models, name) for name in models.tokenizers]

    def tokenizer_choice(self, tokenizer: str | None = None, domain: str | None = None) -> TokenizerChoice:
        """A tokenizer (API name or label; None: the domain's) with its examples and decoder defaults."""
        models, name = self._tokenizer_models(tokenizer, domain)
        return tokenizer_choice(models, name)

    def status(self, domain: str | None = None) -> str:
        """One line on what serves a domain (None: the one the demo opened with)."""
        models = self.models_for(domain)
        line = status_line(models, self.settings)
        if len(self._domains) > 1:
            line = f"{self.domain_label(models.domain)} models · {line}"
        return line

    def view(self, domain: str | None = None) -> DomainView:
        """What the UI shows for ``domain``: classes, generators, tokenizer, example prompts, status."""
        models = self.models_for(domain)
        prompts = self.prompt_examples(domain)
        example = prompts[0] if prompts else None
        return DomainView(
            name=models.domain, label=self.domain_label(models.domain) if models.domain else "Loaded models",
            class_names=list(models.class_names), generator_names=[GENERATOR_LABELS[s] for s in models.generators],
            tokenizer=tokenizer_choice(models, models.tokenizer_name),
            generation_decoder=generation_decoder_choice(models), prompts=prompts,
            prompt_hint=f"e.g. {example!r}" if example else "load a generator first", status=self.status(domain))

    # ------------------------------------------------------------------ compilation
    def compile_choice(self) -> Any:
        """``settings.compile`` resolved (:mod:`runkit.acceleration`): auto stays eager, since a demo request
        is one short batch and a compile warm-up (tens of seconds on a CPU) would not pay back."""
        from runkit.acceleration import choose_compile

        return choose_compile(self.settings.compile, self.settings.torch_device(), 1, unit="batch per request")

    def compile_in_background(self, domain: str | None = None) -> threading.Thread:
        """Compile copies of a domain's tokenizer, generation tokenizer and generators (None: the set the demo
        opened with) in a thread, warm each up once at its saved defaults (a generate through the generation
        decoder, a reconstruct through the tokenizer when that is another model), then swap them in; until
        then (and if compiling fails) requests run on the eager models, so no request waits on the warm-up.
        A model set loaded by the picker meanwhile is kept, not replaced."""
        from runkit.acceleration import compile_for_inference

        eager = self.models_for(domain)

        def work() -> None:
            try:
                sampler = eager.generation_tokenizer
                compiled = replace(eager, tokenizer=copy.deepcopy(eager.tokenizer),
                                   generators={slot: copy.deepcopy(g) for slot, g in eager.generators.items()},
                                   generation_tokenizer=None if sampler is None else copy.deepcopy(sampler))
                notes = compile_for_inference([compiled.tokenizer, *compiled.generators.values(),
                                               *([] if sampler is None else [compiled.generation_tokenizer])])
                for model in compiled.generators.values():  # as the requests run
                    Pipeline(model, compiled.generation_decoder).generate([0])
                if not compiled.generators or sampler is not None:  # the tokenizer decodes too: warm it up
                    size = compiled.tokenizer.config.image_size
                    Pipeline(None, compiled.tokenizer).reconstruct(torch.zeros(1, 3, size, size))
            except Exception as error:  # a failed compile leaves the eager models serving
                print(f"compile: failed ({type(error).__name__}: {error}); serving the eager models", flush=True)
                return
            with self._lock:
                if self._models is eager:
                    self._models = compiled
                elif eager.domain is not None and self._others.get(eager.domain) is eager:
                    self._others[eager.domain] = compiled
                else:
                    return
            print(f"compile: warm-up done; requests {'of ' + eager.domain + ' ' if eager.domain else ''}now use "
                  "the compiled models" + "".join(f"; {note}" for note in notes), flush=True)

        thread = threading.Thread(target=work, name="compile-warm-up", daemon=True)
        thread.start()
        return thread

    def work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="flowmo-demo-"))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def resolve_classes(self, classes: Sequence[int | str] | None, domain: str | None = None) -> list[int]:
        """Class ids from ids or names (the UI's multi-select sends names), checked against the model."""
        return resolve_classes(self.models_for(domain), classes)

    # ------------------------------------------------------------------ prompts
    def vocabulary(self, domain: str | None = None):
        """The prompt vocabulary of a domain's classes: a shipped one when the classes are digits, emoji or
        ImageNet, else trained once on the class names and cached in the work directory."""
        from generator.prompts import ClassVocabulary

        names = tuple(self.models_for(domain).class_names)
        if not names:
            raise ValueError("no generator is loaded, so there are no classes to match prompts against")
        with self._lock:
            if names not in self._vocabularies:
                self._vocabularies[names] = ClassVocabulary.for_class_names(list(names),
                                                                            cache_dir=self.work_dir() / "vocab")
            return self._vocabularies[names]

    def classes_for_prompt(self, prompt: str, domain: str | None = None) -> list[int]:
        """Every class a prompt names, in order ("a seven and a three" -> [7, 3]): the matcher
        ``generator.sample prompt=...`` uses (NoMatchError / PromptError on bad text)."""
        return self.vocabulary(domain).classes_for_prompt(prompt)

    def example_prompt(self, domain: str | None = None) -> str | None:
        """A prompt naming a domain's classes, for hints ("a seven and a three", "a cat"); None without a
        generator."""
        prompts = self.prompt_examples(domain)
        return prompts[0] if prompts else None

    def prompt_examples(self, domain: str | None = None) -> list[str]:
        """Example prompts of a domain (``domains.<name>.prompts``) that name classes of its loaded generators;
        else (models loaded from checkpoints, or none of them matches) one naming two of their classes; none
        without a generator."""
        models = self.models_for(domain)
        if not models.class_names:
            return []
        vocabulary = self.vocabulary(domain)
        spec = self.settings.domains.get(models.domain) if models.domain else None
        fitting = []
        for prompt in spec.prompts if spec is not None else ():
            try:
                vocabulary.classes_for_prompt(prompt)
            except ValueError:  # NoMatchError: these generators have no such class
                continue
            fitting.append(prompt)
        return fitting or [vocabulary.example_prompt]

    def match_prompt(self, prompt: str, top_k: int = 5, domain: str | None = None) -> list[tuple[int, str, float]]:
        """Free text -> [(class_id, name, score)] best first (NoMatchError / PromptError on bad text)."""
        return [(m.class_id, m.name, float(m.score)) for m in self.prompt_matches(prompt, top_k, domain)]

    def select_prompt(self, prompt: str, top_k: int = 5, domain: str | None = None) -> PromptSelection:
        """Every class a prompt names (as :meth:`classes_for_prompt`), with what of each class matched ("a cat"
        -> animal-mammal, matched "cat"), followed by the closest other classes up to ``top_k`` rows."""
        top_k = check_int("top_k", top_k, 1, self.limits.max_prompt_matches)
        vocabulary = self.vocabulary(domain)
        if hasattr(vocabulary, "matches_for_prompt"):
            chosen = list(vocabulary.matches_for_prompt(prompt))
        else:  # a vocabulary that does not say what matched: the ranked match of each class
            ids = vocabulary.classes_for_prompt(prompt)
            ranked = {m.class_id: m for m in vocabulary.match(prompt, top_k=len(vocabulary), threshold=0.0)}
            chosen = [ranked[i] for i in ids]
        ids = [m.class_id for m in chosen]
        others = [m for m in vocabulary.match(prompt, top_k=top_k, threshold=0.0) if m.class_id not in ids]
        return PromptSelection(class_ids=ids, class_names=[m.name for m in chosen],
                               matches=chosen + others[:max(top_k - len(chosen), 0)])

    def prompt_matches(self, prompt: str, top_k: int = 5, domain: str | None = None) -> list[Any]:
        """Free text -> the vocabulary's ``ClassMatch`` records, best first (NoMatchError / PromptError)."""
        top_k = check_int("top_k", top_k, 1, self.limits.max_prompt_matches)
        return list(self.vocabulary(domain).match(prompt, top_k=top_k))

    # ------------------------------------------------------------------ operations
    def generate(self, classes: Sequence[int | str], generator: str = "MaskGIT", samples_per_class: int = 1,
                 steps: int | None = None, cfg: float | None = None, temperature: float | None = None, seed: int = 0,
                 decode_steps: int | None = None, decode_cfg: float | None = None,
                 progress: ProgressFn | None = None, domain: str | None = None) -> generate.GenerationResult:
        """Class ids or names -> generated images (:func:`app.generate.generate`)."""
        return generate.generate(self.models_for(domain), self.limits, self.work_dir(), classes, generator,
                                 samples_per_class, steps, cfg, temperature, seed, decode_steps, decode_cfg, progress)

    def lpips_metric(self):
        """The configured LPIPS metric (built once), or None when no backbone weights are configured."""
        with self._lock:
            if self._lpips is None:
                self._lpips = reconstruct.build_lpips_metric(self.settings, self._models.tokenizer.device)
            return self._lpips

    def reconstruct(self, image: Any, decode_steps: int | None = None, decode_cfg: float | None = None,
                    seed: int = 0, tokenizer: str | None = None, progress: ProgressFn | None = None,
                    domain: str | None = None, search_passes: int = 0) -> reconstruct.ReconstructionResult:
        """Image -> tokens -> reconstruction with its metrics (:func:`app.reconstruct.reconstruct`);
        ``tokenizer`` None: the domain's; ``search_passes`` > 0: tokens found by code search."""
        models, name = self._tokenizer_models(tokenizer, domain)
        return reconstruct.reconstruct(models, self.limits, self.lpips_metric, image, decode_steps, decode_cfg,
                                       seed, name, progress, search_passes)

    def edit_tokens(self, image_a: Any, image_b: Any = None, operation: str = "swap", start: int = 0,
                    end: int | None = None, fraction: float = 0.25, alpha: float = 0.5, seed: int = 0,
                    decode_steps: int | None = None, decode_cfg: float | None = None,
                    progress: ProgressFn | None = None, domain: str | None = None) -> edit_tokens.TokenEditResult:
        """Edit the tokens of one or two images with the domain's tokenizer and decode them
        (:func:`app.edit_tokens.edit_tokens`)."""
        return edit_tokens.edit_tokens(self.models_for(domain), self.limits, image_a, image_b, operation, start, end,
                                       fraction, alpha, seed, decode_steps, decode_cfg, progress)

    def evaluation_plan(self, domain: str | None = None) -> str:
        """What Evaluate scores a domain's samples with and against, in one line (or why it cannot)."""
        return evaluate.evaluation_plan(self.models_for(domain), self.settings)

    def evaluate(self, num_samples: int = 50, generator: str = "MaskGIT", steps: int | None = None,
                 cfg: float | None = None, temperature: float | None = None, decode_steps: int | None = None,
                 decode_cfg: float | None = None, seed: int = 0, progress: ProgressFn | None = None,
                 domain: str | None = None) -> evaluate.EvaluationResult:
        """A small, resumable gFID run (:func:`app.evaluate.evaluate`)."""
        return evaluate.evaluate(self.models_for(domain), self.settings, self.work_dir(), num_samples, generator,
                                 steps, cfg, temperature, decode_steps, decode_cfg, seed, progress)
