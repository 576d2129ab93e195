"""The Gradio Blocks of the demo: widgets wired to :class:`app.pipeline.DemoPipeline`.

Every event has an ``api_name`` so scripts (and the tests) drive the running app with
``gradio_client``. Bad input becomes a ``gr.Error`` message in the browser, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import gradio as gr

from .models import EXAMPLES_DIR, TokenizerChoice
from .pipeline import DemoPipeline

log = logging.getLogger(__name__)

TITLE = "FlowMo: discrete image tokens, class-conditional generation"
PRESET_CHOICES = ["", "flowmo_lo", "flowmo_hi"]


@dataclass(frozen=True)
class SamplingDefaults:
    """Initial slider values (``sampling.*`` in configs/app.yaml): small enough for a laptop CPU."""

    generator_steps: int | None = None  # None: the selected generator's saved default (its config.sampling)
    cfg: float | None = None
    temperature: float | None = None
    decode_steps: int | None = None  # None: the tokenizer's saved default (its config.decode)
    decode_cfg: float | None = None
    samples_per_class: int = 2
    eval_samples: int = 50
    search_passes: int = 1  # Reconstruct's token search (0: the encoder's tokens)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "SamplingDefaults":
        return cls(**dict(values or {}))

    def generator(self, saved: tuple[int, float, float]) -> tuple[int, float, float]:
        """Generator slider values: the configured numbers, else the generator's saved (steps, cfg, temperature)."""
        return tuple(saved[i] if value is None else value
                     for i, value in enumerate((self.generator_steps, self.cfg, self.temperature)))

    def decoder(self, tokenizer: TokenizerChoice) -> tuple[int, float]:
        """Decoder slider values for a tokenizer: the configured numbers, else its saved defaults."""
        return (tokenizer.decode_steps if self.decode_steps is None else self.decode_steps,
                tokenizer.decode_cfg if self.decode_cfg is None else self.decode_cfg)

    def search(self, tokenizer: TokenizerChoice, max_evaluations: int) -> int:
        """The token-search slider's value for a tokenizer: the configured passes where they fit the request
        limit at its saved decoder, else 0 (a large tokenizer would refuse every default request)."""
        return self.search_passes if self.search_passes * tokenizer.search_cost <= max_evaluations else 0


def user_errors(fn: Callable) -> Callable:
    """Show bad input (ValueError, missing files) as its message; anything else as a short error line
    with the traceback in the server log."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, FileNotFoundError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise gr.Error(str(message), print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the browser gets one line, the log the traceback
            log.exception("demo request failed")
            raise gr.Error(f"{type(error).__name__}: {error} (details in the server log)",
                           print_exception=False) from None

    return wrapper


def _progress_callback(progress: gr.Progress) -> Callable[[float, str], None]:
    return lambda fraction, message: progress(min(max(fraction, 0.0), 1.0), desc=message)


def _path(file: Any) -> Any:
    """gr.File gives a path string; examples and API callers may give dicts with a 'path'."""
    if isinstance(file, dict):
        return file.get("path")
    return file


def build_demo(pipeline: DemoPipeline, defaults: SamplingDefaults | None = None,
               model_picker: bool = False) -> gr.Blocks:
    """The domain choice (digits, emoji: every tab follows it), the four tabs (Generate, Reconstruct, Tokens,
    Evaluate) and the status line; ``model_picker`` adds a panel where any client loads models from
    ``settings.model_dirs`` for every user."""
    d = defaults or SamplingDefaults()
    limits = pipeline.limits
    view = pipeline.view()  # the domain the demo opens with; the others load when first chosen

    # ------------------------------------------------------------------ handlers
    def generator_values(name: str | None, domain: str | None = None) -> tuple[int, float, float]:
        return d.generator(pipeline.generator_defaults(name, domain) if name else (8, 1.0, 1.0))

    def generator_update(domain_view) -> gr.Dropdown:
        names = domain_view.generator_names
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    def sliders_update(domain_view) -> list:
        """The generator and decoder slider values of the tabs that generate, for a domain's models."""
        names = domain_view.generator_names
        generator = generator_values(names[0] if names else None, domain_view.name)
        decoder = d.decoder(domain_view.generation_decoder)
        return [*generator, *decoder]

    def token_examples(choice: TokenizerChoice) -> list[list[str]]:
        """Pairs (A, B) of a tokenizer's example images for the Tokens tab."""
        images = choice.examples
        return [[images[i], images[(i + 1) % len(images)]] for i in range(len(images))] if len(images) >= 2 else []

    @user_errors
    def select_domain(domain: str):
        """Every tab follows the domain: its classes, generators, tokenizer, hints, examples and defaults."""
        v = pipeline.view(domain)
        num, pairs = v.tokenizer.num_indices, token_examples(v.tokenizer)
        steps_cfg = sliders_update(v)
        return (v.status, gr.Textbox(placeholder=v.prompt_hint, value=""),
                gr.Dataset(samples=[[p] for p in v.prompts], visible=bool(v.prompts)), gr.Dataframe(value=None),
                gr.Dropdown(choices=v.class_names, value=v.class_names[:1]), generator_update(v),
                *steps_cfg,  # Generate: steps, cfg, temperature, decoder steps, decoder cfg
                gr.Radio(choices=pipeline.tokenizer_options(), value=v.tokenizer.name), v.tokenizer.hint,
                v.tokenizer.examples,
                *d.decoder(v.tokenizer), d.search(v.tokenizer, limits.max_search_evaluations),  # Reconstruct's
                gr.Dataset(samples=pairs, visible=bool(pairs)),
                gr.Number(value=0, label=f"span start (0..{num - 1})"),
                gr.Number(value=num // 2, label=f"span end (..{num})"), *d.decoder(v.tokenizer),  # Tokens
                generator_update(v), *steps_cfg, pipeline.evaluation_plan(domain))  # Evaluate

    @user_errors
    def load_models(tokenizer: str, preset: str, maskgit: str, ar: str):
        status = pipeline.reload(tokenizer.strip() or None, preset or None, maskgit.strip() or None,
                                 ar.strip() or None)
        return status, domain_radio()

    @user_errors
    def select_tokenizer(tokenizer: str, domain: str | None = None):
        """The Reconstruct tab follows the chosen tokenizer: its hint, examples, decoder and search defaults."""
        choice = pipeline.tokenizer_choice(tokenizer, domain)
        steps, cfg = d.decoder(choice)
        return choice.hint, choice.examples, steps, cfg, d.search(choice, limits.max_search_evaluations)

    @user_errors
    def pick_example(tokenizer: str, event: gr.SelectData):
        return pipeline.tokenizer_choice(tokenizer).examples[event.index]

    def domain_radio() -> gr.Radio:
        """The domain choice: every embedded domain whose weights are there; hidden with fewer than two."""
        names = pipeline.domains
        return gr.Radio([(pipeline.domain_label(n), n) for n in names], value=pipeline.domain, label="Domain",
                        info="Every tab uses this domain's models: tokenizer, generators, classifier, examples",
                        visible=len(names) > 1, elem_id="domain")

    def tokenizer_radio() -> gr.Radio:
        options = pipeline.tokenizer_options()
        return gr.Radio(options, value=view.tokenizer.name, label="Tokenizer", visible=len(options) > 1)

    @user_errors
    def match_prompt(prompt: str, domain: str | None = None):
        selection = pipeline.select_prompt(prompt, top_k=5, domain=domain)
        # Every class the prompt names is selected; the table says what matched and shows the closest others.
        return selection.class_names, selection.rows()

    @user_errors
    def pick_prompt(sample: list[str], domain: str | None = None):
        prompt = sample[0] if isinstance(sample, (list, tuple)) else str(sample)
        return (prompt, *match_prompt(prompt, domain))

    def pick_pair(pair: list[str]):
        """A Tokens example: the two image paths of the clicked row."""
        return tuple(pair)

    @user_errors
    def generate(classes, generator, samples_per_class, steps, cfg, temperature, seed, decode_steps, decode_cfg,
                 domain=None, progress=gr.Progress()):
        result = pipeline.generate(classes, generator, samples_per_class, steps, cfg, temperature, seed,
                                   decode_steps, decode_cfg, progress=_progress_callback(progress), domain=domain)
        maskgit_steps = f", {steps} steps" if str(generator).strip().lower() == "maskgit" else ""
        info = (f"{len(result.labels)} images in {result.seconds:.1f} s · {generator}{maskgit_steps}, "
                f"CFG {cfg}, temperature {temperature}, seed {seed} · decoder {decode_steps} steps, CFG {decode_cfg}")
        return result.grid, result.token_map, result.files, info

    @user_errors
    def reconstruct(file, decode_steps, decode_cfg, seed, tokenizer, domain=None, search_passes=0,
                    progress=gr.Progress()):
        result = pipeline.reconstruct(_path(file), decode_steps, decode_cfg, seed, tokenizer=tokenizer,
                                      progress=_progress_callback(progress), domain=domain,
                                      search_passes=search_passes)
        return result.comparison, result.token_map, result.metrics_rows()

    @user_errors
    def edit_tokens(file_a, file_b, operation, start, end, fraction, alpha, seed, decode_steps, decode_cfg,
                    domain=None, progress=gr.Progress()):
        result = pipeline.edit_tokens(_path(file_a), _path(file_b), operation, start, end, fraction, alpha, seed,
                                      decode_steps, decode_cfg, progress=_progress_callback(progress), domain=domain)
        return result.grid, result.token_map

    @user_errors
    def evaluate(num_samples, generator, steps, cfg, temperature, decode_steps, decode_cfg, seed, domain=None,
                 progress=gr.Progress()):
        result = pipeline.evaluate(num_samples, generator, steps, cfg, temperature, decode_steps, decode_cfg,
                                   seed, progress=_progress_callback(progress), domain=domain)
        return result.rows, result.plot, result.grid, result.summary

    @user_errors
    def status(domain: str | None = None) -> str:
        return pipeline.status(domain)

    # ------------------------------------------------------------------ layout
    def generator_sliders() -> tuple[gr.Slider, gr.Slider, gr.Slider]:
        """The generator's sampling controls (steps, CFG, temperature), the same on every tab that samples;
        they start at the first generator's saved defaults and follow the generator picked."""
        names = view.generator_names
        steps, cfg, temperature = generator_values(names[0] if names else None, view.name)
        return (gr.Slider(1, limits.max_generator_steps, value=steps, step=1, label="Generator steps",
                          info="MaskGIT refinement steps; AR always takes one step per token"),
                gr.Slider(0, limits.max_cfg, value=cfg, step=0.1, label="Generator CFG"),
                gr.Slider(0.05, limits.max_temperature, value=temperature, step=0.05, label="Temperature"))

    def decoder_sliders(choice: TokenizerChoice) -> tuple[gr.Slider, gr.Slider]:
        """A decoder's sampling controls: the generation decoder's on the tabs that generate, the tokenizer's
        on those that decode the user's images."""
        steps, cfg = d.decoder(choice)
        return (gr.Slider(1, limits.max_decode_steps, value=steps, step=1, label="Decoder steps"),
                gr.Slider(0, limits.max_cfg, value=cfg, step=0.1, label="Decoder CFG"))

    num_indices = view.tokenizer.num_indices
    generators = view.generator_names
    examples = view.tokenizer.examples  # images the domain's tokenizer can represent (Tokens edits its tokens)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}")
        status_line = gr.Markdown(view.status, elem_id="status")
        domain = domain_radio()
        if model_picker:
            with gr.Accordion("Models (loading replaces them for everyone using this server)", open=False):
                with gr.Row():
                    tokenizer_path = gr.Textbox(label="FlowMo checkpoint",
                                                placeholder="empty: embedded models; a dir or released .pth")
                    preset = gr.Dropdown(PRESET_CHOICES, value="", label="preset (released .pth only)")
                    maskgit_path = gr.Textbox(label="MaskGIT checkpoint (dir)")
                    ar_path = gr.Textbox(label="AR checkpoint (dir)")
                load_button = gr.Button("Load models")

        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt = gr.Textbox(label="Prompt", placeholder=view.prompt_hint)
                        # Clicking an example prompt matches it at once; the examples follow the domain.
                        prompt_examples = gr.Dataset(components=[prompt], samples=[[p] for p in view.prompts],
                                                     label="Example prompts", type="values",
                                                     visible=bool(view.prompts))
                        match_button = gr.Button("Match prompt to classes")
                        matches = gr.Dataframe(headers=["class", "id", "score", "matched"], label="Closest classes "
                                               "(matched: the names in the class the prompt named)",
                                               interactive=False)
                        # Custom values: an API call may name another domain's classes (checked by the pipeline).
                        classes = gr.Dropdown(view.class_names, value=view.class_names[:1], multiselect=True,
                                              label="Classes", allow_custom_value=True)
                        gen_choice = gr.Dropdown(generators, value=generators[0] if generators else None,
                                                 label="Generator")
                        samples = gr.Slider(1, limits.max_batch, value=d.samples_per_class, step=1,
                                            label="Samples per class")
                        steps, cfg, temperature = generator_sliders()
                        seed = gr.Number(0, precision=0, label="Seed")
                        dec_steps, dec_cfg = decoder_sliders(view.generation_decoder)
                        gen_button = gr.Button("Generate", variant="primary")
                    with gr.Column(scale=2):
                        gen_images = gr.Image(label="Images", type="pil", format="png")
                        gen_tokens = gr.Image(label="Token indices", type="pil", format="png")
                        gen_files = gr.File(label="Downloads: images at their own size, token indices",
                                            file_count="multiple", interactive=False)
                        gen_info = gr.Markdown()

            with gr.Tab("Reconstruct", id="reconstruct"):
                with gr.Row():
                    with gr.Column(scale=1):
                        # Generation is tied to the domain's tokenizer; any tokenizer reconstructs.
                        rec_choice = tokenizer_radio()
                        rec_hint = gr.Markdown(view.tokenizer.hint)
                        rec_file = gr.File(label="Image", file_types=["image"], type="filepath")
                        # A gallery, not gr.Examples: its images change with the tokenizer choice.
                        rec_examples = gr.Gallery(examples, label="Examples (click one)", columns=6, height="auto",
                                                  allow_preview=False, object_fit="contain", interactive=False)
                        rec_steps, rec_cfg = decoder_sliders(view.tokenizer)
                        rec_seed = gr.Number(0, precision=0, label="Seed")
                        rec_search = gr.Slider(0, limits.max_search_passes, step=1,
                                               value=d.search(view.tokenizer, limits.max_search_evaluations),
                                               label="Token search passes",
                                               info="0: the encoder's tokens. Each pass tries flipping every bit "
                                                    "and keeps flips that bring the reconstruction closer: the "
                                                    "same bits, slower to encode")
                        rec_button = gr.Button("Reconstruct", variant="primary")
                    with gr.Column(scale=2):
                        rec_images = gr.Image(label="Original | reconstruction", type="pil", format="png")
                        rec_metrics = gr.Dataframe(headers=["metric", "value"], label="Metrics", interactive=False)
                        rec_tokens = gr.Image(label="Token indices", type="pil", format="png")

            with gr.Tab("Tokens", id="tokens"):
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            tok_a = gr.File(label="Image A", file_types=["image"], type="filepath")
                            tok_b = gr.File(label="Image B", file_types=["image"], type="filepath")
                        # A dataset, not gr.Examples: its pairs change with the domain.
                        tok_examples = gr.Dataset(components=[tok_a, tok_b], samples=token_examples(view.tokenizer),
                                                  label="Examples (click a pair)", type="values",
                                                  visible=bool(token_examples(view.tokenizer)))
                        operation = gr.Radio(["swap", "randomize", "mix"], value="swap", label="Operation",
                                             info="swap a span A<->B · randomize a fraction of A · "
                                                  "mix: each token from B with probability alpha")
                        with gr.Row():
                            span_start = gr.Number(0, precision=0, label=f"span start (0..{num_indices - 1})")
                            span_end = gr.Number(num_indices // 2, precision=0, label=f"span end (..{num_indices})")
                        fraction = gr.Slider(0, 1, value=0.25, step=0.01, label="randomize fraction")
                        alpha = gr.Slider(0, 1, value=0.5, step=0.01, label="mix alpha")
                        tok_seed = gr.Number(0, precision=0, label="Seed")
                        tok_steps, tok_cfg = decoder_sliders(view.tokenizer)
                        tok_button = gr.Button("Edit and decode", variant="primary")
                    with gr.Column(scale=2):
                        tok_images = gr.Image(label="Decoded", type="pil", format="png")
                        tok_tokens = gr.Image(label="Token indices", type="pil", format="png")

            with gr.Tab("Evaluate", id="evaluate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("gFID / IS / precision / recall on a few samples, with memorization and "
                                    "diversity beside real data. A domain's models are scored in the features of "
                                    "its own metric classifier (digits, emoji: not comparable with ImageNet FIDs) "
                                    "against its held-out images; other models with Inception-v3, UNCALIBRATED "
                                    "without `evaluate.inception_weights=`.")
                        ev_plan = gr.Markdown(pipeline.evaluation_plan())
                        ev_samples = gr.Slider(10, limits.max_eval_samples, value=min(d.eval_samples,
                                                                                       limits.max_eval_samples),
                                               step=1, label="Samples")
                        ev_gen = gr.Dropdown(generators, value=generators[0] if generators else None,
                                             label="Generator")
                        ev_steps, ev_cfg, ev_temperature = generator_sliders()
                        ev_dec_steps, ev_dec_cfg = decoder_sliders(view.generation_decoder)
                        ev_seed = gr.Number(0, precision=0, label="Seed")
                        ev_button = gr.Button("Evaluate", variant="primary")
                    with gr.Column(scale=2):
                        ev_table = gr.Dataframe(headers=["metric", "value"], label="Metrics", interactive=False)
                        ev_plot = gr.Image(label="Metrics plot", type="pil", format="png")
                        ev_grid = gr.Image(label="Samples", type="pil", format="png")
                        ev_summary = gr.Markdown()

        # ------------------------------------------------------------------ events
        rec_outputs = [rec_hint, rec_examples, rec_steps, rec_cfg, rec_search]
        domain_outputs = [status_line, prompt, prompt_examples, matches, classes, gen_choice, steps, cfg, temperature,
                          dec_steps, dec_cfg, rec_choice, *rec_outputs, tok_examples, span_start, span_end, tok_steps,
                          tok_cfg, ev_gen, ev_steps, ev_cfg, ev_temperature, ev_dec_steps, ev_dec_cfg, ev_plan]
        domain.input(select_domain, [domain], domain_outputs, api_name="select_domain")
        rec_choice.input(select_tokenizer, [rec_choice, domain], rec_outputs, api_name="select_tokenizer")
        if model_picker:
            load_button.click(load_models, [tokenizer_path, preset, maskgit_path, ar_path], [status_line, domain],
                              api_name="load_models", concurrency_limit=1).then(
                select_domain, [domain], domain_outputs, api_visibility="private")
        for picker, sliders in ((gen_choice, [steps, cfg, temperature]), (ev_gen, [ev_steps, ev_cfg, ev_temperature])):
            picker.input(generator_values, [picker, domain], sliders, api_visibility="private")
        match_button.click(match_prompt, [prompt, domain], [classes, matches], api_name="match_prompt")
        prompt.submit(match_prompt, [prompt, domain], [classes, matches], api_visibility="private")
        prompt_examples.click(pick_prompt, [prompt_examples, domain], [prompt, classes, matches],
                              api_visibility="private")
        gen_button.click(generate, [classes, gen_choice, samples, steps, cfg, temperature, seed, dec_steps, dec_cfg,
                                    domain], [gen_images, gen_tokens, gen_files, gen_info], api_name="generate")
        rec_examples.select(pick_example, [rec_choice], [rec_file], api_visibility="private")
        tok_examples.click(pick_pair, [tok_examples], [tok_a, tok_b], api_visibility="private")
        rec_button.click(reconstruct, [rec_file, rec_steps, rec_cfg, rec_seed, rec_choice, domain, rec_search],
                         [rec_images, rec_tokens, rec_metrics], api_name="reconstruct")
        tok_button.click(edit_tokens, [tok_a, tok_b, operation, span_start, span_end, fraction, alpha, tok_seed,
                                       tok_steps, tok_cfg, domain], [tok_images, tok_tokens], api_name="edit_tokens")
        # One evaluation at a time: it is the heaviest request and writes into the work directory.
        ev_button.click(evaluate, [ev_samples, ev_gen, ev_steps, ev_cfg, ev_temperature, ev_dec_steps, ev_dec_cfg,
                                   ev_seed, domain], [ev_table, ev_plot, ev_grid, ev_summary], api_name="evaluate",
                        concurrency_limit=1)
        demo.load(status, [domain], status_line, api_name="status")
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, concurrency: int = 2,
           queue_size: int = 64, max_upload_mb: int = 25, share: bool = False, open_browser: bool = False,
           block: bool = True) -> str:
    """Queue (with a concurrency limit: model calls share the CPU/GPU) and serve; returns the local URL."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request Gradio makes to itself
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    # The example gallery hands its files to the image input, wherever the server was started from.
    # quiet: Gradio's own lines would tell the user to set `share=True` in launch(); ours name share=true.
    _, url, share_url = demo.launch(server_name=host, server_port=port, share=share, inbrowser=open_browser,
                                    prevent_thread_lock=True, max_file_size=f"{max_upload_mb}mb", ssr_mode=False,
                                    quiet=True, footer_links=["api"], allowed_paths=[str(EXAMPLES_DIR)])
    print(f"serving the demo at {url} (open it in a browser)"
          + (f"; public link {share_url}" if share_url else "; share=true makes a public link"), flush=True)
    if block:
        demo.block_thread()
    return url
