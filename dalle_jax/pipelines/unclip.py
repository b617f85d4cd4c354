"""unCLIP end to end (Ramesh et al. 2022): text → CLIP image embedding (prior) → small image
(decoder) → full-size image (the cascade of upsamplers), and the embedding manipulations of
section 3: variations, interpolations and text diffs.

`Unclip.load(config, workdir)` gathers the trained stages from a work dir: `clip`,
`prior_KIND` (`config.prior.kind`), `decoder` and each upsampler of `config.upsamplers`
(`upsampler` alone by default; the paper chains two). With `decoder.sample.candidates
= N > 1`, text-to-image draws N small images per prompt and CLIP keeps the one nearest the
prompt, as DALL·E reranks its samples (Ramesh et al. 2021, section 2.5); only that one is upsampled.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.config import stage_config
from dalle_jax.eval import rerank
from dalle_jax.models.pixels import box_downsample, to_uint8
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.tasks.decoder import DecoderTask, UpsamplerTask, unit_range, upsampler_sections
from dalle_jax.tasks.prior import PriorTask
from dalle_jax.train import trainer


def slerp(a, b, fraction):
    """Spherical interpolation of unit vectors `a`, `b` (`[..., P]`) at `fraction` (broadcasts)."""
    cos = jnp.clip(jnp.sum(a * b, axis=-1, keepdims=True), -1.0, 1.0)
    angle = jnp.arccos(cos)
    sin = jnp.sin(angle)
    safe = jnp.where(sin > 1e-4, sin, 1.0)
    spherical = (jnp.sin((1 - fraction) * angle) * a + jnp.sin(fraction * angle) * b) / safe
    return jnp.where(sin > 1e-4, spherical, (1 - fraction) * a + fraction * b)  # (anti)parallel: straight line


def text_diff_embeddings(image_embedding, from_text_embedding, to_text_embedding, fractions):
    """Section 3.3: the image embedding rotated towards the normalised text diff
    `z_d = norm(z_t(to) - z_t(from))`, `slerp(z_i, z_d, θ)` for each θ in `fractions`; `[len(fractions), P]`."""
    direction = to_text_embedding - from_text_embedding
    direction = direction / jnp.linalg.norm(direction).clip(1e-6)
    return slerp(image_embedding[None], direction[None], jnp.asarray(fractions, jnp.float32)[:, None])


def _trained(config, workdir: pathlib.Path, stage: str, task):
    return trainer.load_variables(stage_config(config, stage), workdir / task.name, task)["params"]


def _noise(key, shape, shared: bool):
    """Standard normal noise of `shape`: one draw for every row if `shared`, else one per row."""
    return jnp.broadcast_to(jax.random.normal(key, (1, *shape[1:]) if shared else shape), shape)


@dataclasses.dataclass(frozen=True, eq=False)
class Unclip:
    clip: TrainedClip
    prior: PriorTask
    decoder: DecoderTask
    upsamplers: tuple[UpsamplerTask, ...]  # the cascade, lowest resolution first
    params: dict[str, Any]  # by config section: prior, decoder, and each upsampler's
    config: Any

    @classmethod
    def load(cls, config, workdir: str | pathlib.Path) -> "Unclip":
        workdir = pathlib.Path(workdir)
        upsamplers = tuple(UpsamplerTask.from_config(config, workdir, stage=stage)
                           for stage in range(1, len(upsampler_sections(config)) + 1))
        tasks = {"prior": PriorTask.from_config(config, workdir, training=False),
                 "decoder": DecoderTask.from_config(config, workdir), **{task.name: task for task in upsamplers}}
        commands = {"prior": "train-prior", "decoder": "train-decoder",
                    **{task.name: f"train-upsampler --stage {stage}" for stage, task in enumerate(upsamplers, 1)}}
        for section, task in tasks.items():
            if not (workdir / task.name / "checkpoints").exists():
                raise FileNotFoundError(f"unCLIP needs a trained {task.name} in {workdir / task.name}: train it "
                                        f"with python run.py {commands[section]} (docs/commands.md)")
        params = {section: _trained(config, workdir, section, task) for section, task in tasks.items()}
        return cls(TrainedClip.load(workdir), tasks["prior"], tasks["decoder"], upsamplers, params, config)

    # -- pieces --------------------------------------------------------------------------

    def captions(self, texts: Sequence[str]) -> np.ndarray:
        return self.prior.text_tokenizer.encode(list(texts), self.config.text.max_length)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        return self.clip.embedders()[1](texts)

    def image_embeddings(self, images: np.ndarray) -> np.ndarray:
        return self.clip.embedders()[0](images)

    def decode(self, image_embeddings, texts: Sequence[str], rng, *, noise=None, share_noise: bool = False,
               decoder: DecoderTask | None = None, candidates: int = 1) -> np.ndarray:
        """`uint8 [len(texts) // candidates, H, W, 3]`: decoder (from `noise`, else fresh noise),
        then the upsamplers. With `share_noise`, every row starts each stage from the same fresh
        noise, so that with deterministic samplers rows with one embedding come out alike. With
        `candidates > 1`, each run of that many rows is one prompt's candidates (its text
        repeated): CLIP keeps one (`rerank.best_of_candidates`) before the upsamplers."""
        decoder = decoder or self.decoder
        decoder_key, decoder_noise_key, upsampler_key, upsampler_noise_key = jax.random.split(rng, 4)
        if noise is None:
            noise = _noise(decoder_noise_key, decoder.noise_shape(len(texts)), share_noise)
        low_res = decoder.sample(self.params["decoder"], jnp.asarray(image_embeddings), self.captions(texts),
                                 noise, decoder_key)
        if candidates > 1:
            low_res = rerank.best_of_candidates(low_res, texts[::candidates], *self.clip.embedders())
        return self.upsample(low_res, upsampler_key, upsampler_noise_key, share_noise=share_noise)

    def upsample(self, low_res, rng, noise_rng, *, share_noise: bool = False) -> np.ndarray:
        """`uint8 [n, H, W, 3]`: each upsampler of the cascade in turn on `float [n, s, s, 3]`
        low-resolution images in [-1, 1]; the first stage samples with `rng` from noise drawn
        with `noise_rng` (one draw for every row if `share_noise`), each later stage with keys
        split from the stage before's."""
        images = low_res
        for upsampler in self.upsamplers:
            noise = _noise(noise_rng, upsampler.noise_shape(images.shape), share_noise)
            images = upsampler.sample(self.params[upsampler.name], images, noise, rng)
            rng, noise_rng = jax.random.split(rng)
        return np.asarray(to_uint8(images))

    # -- what users call -----------------------------------------------------------------

    def generate(self, prompts: Sequence[str], rng) -> np.ndarray:
        """`uint8 [len(prompts), H, W, 3]`: prior, decoder and upsamplers, one image per prompt; the
        best by CLIP of `decoder.sample.candidates` prior-and-decoder draws when that is above 1."""
        candidates = self.config.decoder.sample.get("candidates", 1)
        repeated = [prompt for prompt in prompts for _ in range(candidates)]
        prior_key, decode_key = jax.random.split(rng)
        embeddings = self.prior.sample(self.params["prior"], self.captions(repeated),
                                       jnp.asarray(self.text_embeddings(repeated)), prior_key)
        return self.decode(embeddings, repeated, decode_key, candidates=candidates)

    def variations(self, image: np.ndarray, num: int, rng) -> np.ndarray:
        """`num` images decoded from one image's CLIP embedding (no caption), each from its own noise."""
        embedding = self.image_embeddings(image[None])
        return self.decode(np.repeat(embedding, num, axis=0), [""] * num, rng)

    def interpolate(self, image_a: np.ndarray, image_b: np.ndarray, num: int, rng) -> np.ndarray:
        """`num` images along the slerp between two images' CLIP embeddings, every stage from one
        shared noise through the deterministic sampler (η = 0), so that only the embedding changes."""
        a, b = self.image_embeddings(np.stack([image_a, image_b]))
        fractions = jnp.linspace(0.0, 1.0, num)[:, None]
        return self.decode(slerp(a[None], b[None], fractions), [""] * num, rng, share_noise=True,
                           decoder=self.decoder.with_sample(eta=0.0))

    def text_diff(self, image: np.ndarray, from_text: str, to_text: str, num: int, rng,
                  max_fraction: float = 0.5) -> np.ndarray:
        """Section 3.3: `num` images whose embedding turns from the image's towards the
        difference `to_text - from_text` (θ from 0 to `max_fraction`), all decoded from the
        image's own DDIM-inverted decoder latent so that the rest of the picture stays."""
        embedding = self.image_embeddings(image[None])
        from_embedding, to_embedding = self.text_embeddings([from_text, to_text])
        embeddings = text_diff_embeddings(embedding[0], from_embedding, to_embedding,
                                          np.linspace(0.0, max_fraction, num))
        small = box_downsample(unit_range(image)[None], self.decoder.section.image_size)
        latent = self.decoder.invert(self.params["decoder"], jnp.asarray(small), jnp.asarray(embedding),
                                     self.captions([""]))
        return self.decode(embeddings, [""] * num, rng, noise=jnp.broadcast_to(latent, self.decoder.noise_shape(num)),
                           share_noise=True,  # the upsamplers' noise
                           decoder=self.decoder.with_sample(sampler="ddim", eta=0.0))  # the inverse of `invert`
