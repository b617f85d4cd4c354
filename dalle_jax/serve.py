"""A web page to try the models of a work dir: `python run.py serve --config C --workdir W`.

Gradio (the `[demo]` extra: `pip install -e '.[demo]'`), with a tab per generation the work dir holds:
DALL·E 1 (prompt, samples, temperature, top-k, top-p, CLIP reranking when a CLIP is there), unCLIP (prompt,
decoder steps, guidance; variations of an uploaded image) and the captioner (an uploaded image to its caption).
Each model is read with the config it trained with (`W/STAGE/config.json`), so the page needs nothing but the
work dir. Bad input (an empty or overlong prompt, a file that is no image, a value out of range) is refused
with a message under the button, and the server goes on serving.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import numpy as np

from dalle_jax.data import images as image_files
from dalle_jax.train import trainer

MAX_PROMPT_CHARACTERS = 1_000
MAX_SAMPLES = 16


class InputError(ValueError):
    """A request the page refuses, with the message it shows."""


def check_prompt(prompt: str | None) -> str:
    """The prompt, stripped; `InputError` when it is empty or longer than `MAX_PROMPT_CHARACTERS`."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError("Type a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARACTERS:
        raise InputError(f"The prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARACTERS:,} are read.")
    return prompt


def check_count(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an integer in [low, high], else `InputError` naming it."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, not {value!r}.") from None
    if not low <= number <= high or number != value:
        raise InputError(f"{name} must be a whole number from {low} to {high}, not {value!r}.")
    return number


def read_upload(path: str | None, image_size: int, max_pixels: int) -> np.ndarray:
    """An uploaded file as the models see it (RGB square of `image_size`), or `InputError`."""
    if not path:
        raise InputError("Upload an image first.")
    try:
        return image_files.read_input_image(path, image_size, max_pixels=max_pixels)
    except (OSError, image_files.Rejected) as error:
        raise InputError(f"That file cannot be used as an image: {error}.") from None


def _trained(run_dir: pathlib.Path) -> bool:
    return trainer.trained_step(run_dir) is not None


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: the lru_caches below key on it
class Models:
    """The models a work dir holds, loaded on first use, each with the config it trained with."""

    workdir: pathlib.Path

    def offered(self) -> list[str]:
        """Which tabs the page shows: "dalle", "unclip", "captioner"."""
        from dalle_jax.tasks.decoder import upsampler_sections

        w = self.workdir
        unclip = (self.prior_dirs() and _trained(w / "clip") and _trained(w / "decoder")
                  and all(_trained(w / name) for name in upsampler_sections(trainer.run_config(w / "decoder"))))
        return [tab for tab, present in (("dalle", _trained(w / "dalle")), ("unclip", unclip),
                                         ("captioner", self.captioner_modes())) if present]

    def prior_dirs(self) -> list[pathlib.Path]:
        return [d for d in sorted(self.workdir.glob("prior_*")) if _trained(d)]

    def captioner_modes(self) -> list[str]:
        return [d.name.removeprefix("captioner_") for d in sorted(self.workdir.glob("captioner_*")) if _trained(d)]

    @functools.cached_property
    def dalle(self):
        from dalle_jax.tasks.dalle import DalleTask

        config = trainer.run_config(self.workdir / "dalle")
        task = DalleTask.from_config(config, self.workdir)
        return task, trainer.load_variables(config, self.workdir / "dalle", task)["params"]

    @functools.cached_property
    def clip_embedders(self):
        from dalle_jax.tasks.clip import TrainedClip

        return TrainedClip.load(self.workdir).embedders() if _trained(self.workdir / "clip") else None

    @functools.lru_cache(maxsize=8)
    def dalle_with(self, temperature: float, top_k: int, top_p: float, candidates: int):
        """The DALL·E task sampling with these settings (each new setting compiles once)."""
        task, params = self.dalle
        config = task.config.copy_and_resolve_references()
        config.sample.update(temperature=temperature, top_k=top_k, top_p=top_p, candidates=candidates,
                             batch_size=candidates * max(1, config.sample.batch_size // config.sample.candidates))
        return dataclasses.replace(task, config=config), params

    @functools.cached_property
    def unclip(self):
        from dalle_jax.pipelines.unclip import Unclip

        config = trainer.run_config(self.workdir / "decoder").copy_and_resolve_references()
        config.prior.kind = self.prior_dirs()[0].name.removeprefix("prior_")
        return Unclip.load(config, self.workdir)

    @functools.lru_cache(maxsize=8)
    def unclip_with(self, num_steps: int, guidance_scale: float):
        unclip = self.unclip
        return dataclasses.replace(unclip, decoder=unclip.decoder.with_sample(num_steps=num_steps,
                                                                              guidance_scale=guidance_scale))

    @functools.lru_cache(maxsize=3)
    def captioner(self, mode: str):
        from dalle_jax.experiments import dalle3

        config = trainer.run_config(self.workdir / f"captioner_{mode}")
        return (*dalle3.trained_captioner(config, self.workdir, mode), config)


def dalle_samples(models: Models, prompt, samples, temperature, top_k, top_p, rerank, seed=0) -> list[np.ndarray]:
    """`samples` images for `prompt` (the best of `rerank` by CLIP when `rerank` > 0)."""
    from dalle_jax.eval import generation, rerank as reranking

    prompt = check_prompt(prompt)
    samples = check_count(samples, "Samples", 1, MAX_SAMPLES)
    top_k = check_count(top_k, "Top-k", 0, 1 << 20)
    rerank = check_count(rerank, "CLIP reranking", 0, 64)
    if not 0.05 <= float(temperature) <= 3.0:
        raise InputError(f"Temperature must be from 0.05 to 3, not {temperature}.")
    if not 0.0 < float(top_p) <= 1.0:
        raise InputError(f"Top-p must be above 0 and at most 1, not {top_p}.")
    if rerank and models.clip_embedders is None:
        raise InputError("CLIP reranking needs a CLIP in the work dir (run.py train-clip).")
    if rerank and rerank < samples:
        raise InputError(f"CLIP reranking keeps the best {samples} of its draws: draw at least {samples}, "
                         f"not {rerank}.")
    trained_candidates = models.dalle[0].config.sample.candidates  # the best of these, by likelihood
    task, params = models.dalle_with(float(temperature), top_k, float(top_p), 1 if rerank else trained_candidates)
    key = jax.random.key(seed)
    generate = lambda prompts, batch: task.generate(params, prompts, jax.random.fold_in(key, batch))
    draws = generation.generate_candidates(generate, [prompt], candidates=rerank or samples,
                                           batch_size=task.config.sample.batch_size)
    if rerank:
        draws, _ = reranking.rerank(draws, [prompt], *models.clip_embedders, keep=samples)
    return list(draws[0])


def unclip_samples(models: Models, prompt, samples, num_steps, guidance_scale, seed=0) -> list[np.ndarray]:
    """`samples` images for `prompt` through prior, decoder (`num_steps`, `guidance_scale`) and upsampler."""
    from dalle_jax.eval import generation

    prompt = check_prompt(prompt)
    samples = check_count(samples, "Samples", 1, MAX_SAMPLES)
    num_steps = check_count(num_steps, "Decoder steps", 1, 1000)
    if not 0.0 <= float(guidance_scale) <= 20.0:
        raise InputError(f"Guidance must be from 0 to 20, not {guidance_scale}.")
    unclip = models.unclip_with(num_steps, float(guidance_scale))
    key = jax.random.key(seed)
    generate = lambda prompts, batch: unclip.generate(prompts, jax.random.fold_in(key, batch))
    draws = generation.generate_candidates(generate, [prompt], candidates=samples,
                                           batch_size=unclip.config.sample.batch_size)
    return list(draws[0])


def unclip_variations(models: Models, upload, samples, seed=0) -> list[np.ndarray]:
    """The uploaded image, then `samples` images decoded from its CLIP embedding."""
    unclip = models.unclip
    samples = check_count(samples, "Samples", 1, MAX_SAMPLES)
    image = read_upload(upload, unclip.config.data.image_size, unclip.config.data.max_pixels)
    return [image, *unclip.variations(image, samples, jax.random.key(seed))]


def caption(models: Models, upload, mode, seed=0) -> str:
    """The `mode` captioner's caption of the uploaded image."""
    if mode not in models.captioner_modes():
        raise InputError(f"No captioner {mode!r} in the work dir; there are {', '.join(models.captioner_modes())}.")
    task, params, config = models.captioner(mode)
    image = read_upload(upload, config.data.image_size, config.data.max_pixels)
    return task.caption(params, image[None], jax.random.key(seed))[0]


def build_page(workdir: str | pathlib.Path):
    """The Gradio page for the models in `workdir` (a `gr.Blocks`; `.launch()` serves it)."""
    import gradio as gr

    models = Models(pathlib.Path(workdir))
    offered = models.offered()
    if not offered:
        raise FileNotFoundError(f"no trained DALL·E, unCLIP or captioner in {workdir}: train one first "
                                "(python run.py --help)")

    def shown(fn):
        """`fn`'s result and an empty message, or nothing and the message of a refusal: shown under
        the button, the server serving on."""
        def handler(*args, progress=gr.Progress()):
            progress(0.0, desc="working")
            try:
                return fn(models, *args), ""
            except InputError as error:
                return None, f"**{error}**"

        return handler

    with gr.Blocks(title="dalle-jax") as page:
        gr.Markdown(f"# dalle-jax\nThe models in `{workdir}`.")
        if "dalle" in offered:
            with gr.Tab("DALL·E 1"):
                prompt = gr.Textbox(label="Prompt", value="a small red circle", elem_id="dalle-prompt")
                with gr.Row():
                    samples = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="dalle-samples")
                    temperature = gr.Slider(0.05, 3.0, value=float(models.dalle[0].config.sample.temperature),
                                            label="Temperature")
                    top_k = gr.Number(value=0, precision=0, label="Top-k (0: all)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, label="Top-p")
                    rerank = gr.Number(value=0, precision=0, label="CLIP reranking: draws (0: off)",
                                       interactive=models.clip_embedders is not None)
                button = gr.Button("Generate", variant="primary", elem_id="dalle-generate")
                status = gr.Markdown(elem_id="dalle-status")
                gallery = gr.Gallery(label="Samples", columns=4, elem_id="dalle-gallery")
                button.click(shown(dalle_samples), [prompt, samples, temperature, top_k, top_p, rerank],
                             [gallery, status])
        if "unclip" in offered:
            with gr.Tab("unCLIP"):
                decoder = models.unclip.config.decoder.sample
                prompt = gr.Textbox(label="Prompt", value="a small red circle", elem_id="unclip-prompt")
                with gr.Row():
                    samples = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="Samples")
                    steps = gr.Slider(1, 250, value=int(decoder.num_steps), step=1, label="Decoder steps")
                    guidance = gr.Slider(0.0, 10.0, value=float(decoder.guidance_scale), label="Guidance")
                button = gr.Button("Generate", variant="primary", elem_id="unclip-generate")
                status = gr.Markdown(elem_id="unclip-status")
                gallery = gr.Gallery(label="Samples", columns=4, elem_id="unclip-gallery")
                button.click(shown(unclip_samples), [prompt, samples, steps, guidance], [gallery, status])
                gr.Markdown("### Variations of an image")
                # A file, not gr.Image: any upload reaches the server, which reads it or says why not.
                upload = gr.File(type="filepath", label="Image file", elem_id="unclip-upload")
                variations = gr.Button("Variations", elem_id="unclip-variations")
                varied_status = gr.Markdown(elem_id="variations-status")
                varied = gr.Gallery(label="The image, then its variations", columns=5)
                variations.click(shown(unclip_variations), [upload, samples], [varied, varied_status])
        if "captioner" in offered:
            with gr.Tab("Captioner"):
                modes = models.captioner_modes()
                upload = gr.File(type="filepath", label="Image file", elem_id="caption-upload")
                mode = gr.Radio(modes, value=modes[-1], label="Captions")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                status = gr.Markdown(elem_id="caption-status")
                text = gr.Textbox(label="Caption", elem_id="caption-text")
                button.click(shown(caption), [upload, mode], [text, status])
    return page
