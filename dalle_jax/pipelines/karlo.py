"""Karlo's unCLIP pipeline in JAX: prompt → CLIP text encoder → prior (image embedding) →
decoder (64 px) → super-resolution (256 px), as diffusers' UnCLIPPipeline runs it.

Each stage samples with this project's `diffusion.samplers.sample` (DDPM on the respaced cosine
schedule, which is what Karlo's UnCLIPScheduler computes) and classifier-free guidance; the
super-resolution stage takes every step but the last with `super_res_first` and the last with
`super_res_last`. Every stage is one jitted function of its parameters (passed in, not closed
over, so that a billion parameters never become constants of the compiled program).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.diffusion import samplers
from dalle_jax.diffusion.schedules import make_schedule
from dalle_jax.models.pixels import to_uint8
from dalle_jax.weights import karlo

STAGES = ("prior", "decoder", "super_res")
DEFAULT_STEPS = {"prior": 25, "decoder": 25, "super_res": 7}  # diffusers' UnCLIPPipeline defaults


@dataclasses.dataclass(frozen=True)
class TextConditioning:
    """CLIP's view of a batch of prompts: projected embeddings `[b, P]`, hidden states
    `[b, L, D]` and the mask of their tokens `bool [b, L]`."""

    embeddings: jax.Array
    hidden: jax.Array
    mask: jax.Array

    def tree(self):
        return self.embeddings, self.hidden, self.mask


@dataclasses.dataclass(frozen=True, eq=False)
class Karlo:
    snapshot: pathlib.Path
    modules: dict[str, Any]  # text_encoder, prior, decoder, super_res_first, super_res_last[, image_encoder]
    params: dict[str, Any]
    tokenizer: Any
    prior_statistics: tuple[np.ndarray, np.ndarray]  # clip_mean, clip_std
    schedules: dict[str, karlo.StageSchedule]  # by stage
    image_sizes: tuple[int, int]  # the decoder's and the super-resolution's (64 and 256 for Karlo)

    @classmethod
    def load(cls, snapshot: str | pathlib.Path, dtype=jnp.float32) -> "Karlo":
        """Every component of a Karlo snapshot (diffusers layout), one at a time, in `dtype`; the
        image encoder too where the snapshot has one (the image-variation snapshot)."""
        snapshot = pathlib.Path(snapshot)
        modules, params = {}, {}
        modules["text_encoder"], params["text_encoder"], tokenizer = karlo.load_text_encoder(snapshot, dtype)
        prior = karlo.load_prior(snapshot, dtype)
        modules["prior"], params["prior"] = prior.module, prior.params
        modules["decoder"], params["decoder"] = karlo.load_decoder(snapshot, dtype)
        for name in ("super_res_first", "super_res_last"):
            modules[name], params[name] = karlo.load_super_res(snapshot, name, dtype)
        if (snapshot / "image_encoder").is_dir():
            modules["image_encoder"], params["image_encoder"] = karlo.load_image_encoder(snapshot, dtype)
        schedules = {stage: karlo.load_schedule(snapshot, f"{stage}_scheduler") for stage in STAGES}
        sizes = tuple(karlo.component_config(snapshot, name)[1]["sample_size"] for name in ("decoder", "super_res_first"))
        return cls(snapshot, modules, params, tokenizer, (prior.clip_mean, prior.clip_std), schedules, sizes)

    @property
    def embedding_dim(self) -> int:
        return self.prior_statistics[0].shape[0]

    @property
    def image_encoder_size(self) -> int:
        """The pixels an image is read at for `variations` (224 for Karlo's ViT-L/14)."""
        return self._image_encoder()[0].vision.image_size

    def _image_encoder(self):
        if "image_encoder" not in self.modules:
            raise karlo.no_image_encoder(self.snapshot)
        return self.modules["image_encoder"], self.params["image_encoder"]

    # -- end to end ----------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], rng, *, steps: dict[str, int] = DEFAULT_STEPS,
                 prior_guidance: float = 4.0, decoder_guidance: float = 8.0) -> np.ndarray:
        """`uint8 [len(prompts), S, S, 3]`: one image per prompt (repeat a prompt for more)."""
        text, null = self.encode_text(prompts), self.encode_text([""])
        prior_key, *keys = jax.random.split(rng, 3)
        embeddings = self.image_embeddings(text, null, prior_key, steps=steps["prior"], guidance_scale=prior_guidance)
        return self._images(embeddings, text, null, keys, steps, decoder_guidance)

    def variations(self, image: np.ndarray, num: int, rng, *, steps: dict[str, int] = DEFAULT_STEPS,
                   decoder_guidance: float = 8.0) -> np.ndarray:
        """`uint8 [num, S, S, 3]` decoded from `image`'s CLIP embedding (`uint8 [s, s, 3]` at
        `image_encoder_size`), with the empty prompt, as diffusers' UnCLIPImageVariationPipeline."""
        embedding = _encode(*self._image_encoder(), jnp.asarray(image[None]))
        empty = self.encode_text([""] * num)
        return self._images(jnp.repeat(embedding, num, axis=0), empty, empty, jax.random.split(rng, 2), steps,
                            decoder_guidance)

    def _images(self, embeddings, text, null, keys, steps, decoder_guidance) -> np.ndarray:
        small_size, size = self.image_sizes
        small = self.decode(embeddings, text, null, keys[0], size=small_size, steps=steps["decoder"],
                            guidance_scale=decoder_guidance)
        return np.asarray(to_uint8(self.super_resolve(small, keys[1], size=size, steps=steps["super_res"])))

    # -- the stages --------------------------------------------------------------------------

    def encode_text(self, prompts: Sequence[str]) -> TextConditioning:
        length = self.modules["text_encoder"].text.length
        tokens = self.tokenizer.encode(list(prompts), length)
        embeddings, hidden = _encode(self.modules["text_encoder"], self.params["text_encoder"], jnp.asarray(tokens))
        return TextConditioning(embeddings, hidden, jnp.asarray(karlo.text_mask(tokens, self.tokenizer.eos_id)))

    def image_embeddings(self, text: TextConditioning, null: TextConditioning, rng, *, steps: int = 25,
                         guidance_scale: float = 4.0, noise=None, step_noise=None) -> jax.Array:
        """The prior's CLIP image embeddings `[b, P]` for the prompts of `text` (`null`: the empty prompt's)."""
        batch = text.embeddings.shape[0]
        noise = jax.random.normal(jax.random.fold_in(rng, 0), (batch, self.embedding_dim)) if noise is None else noise
        mean, std = self.prior_statistics
        return _sample_prior(self.modules["prior"], self.schedules["prior"], steps, guidance_scale,
                             self.params["prior"], text.tree(), _repeat(null, batch).tree(), jnp.asarray(noise),
                             rng, step_noise) * std + mean

    def decode(self, image_embeddings, text: TextConditioning, null: TextConditioning, rng, *, size: int,
               steps: int = 25, guidance_scale: float = 8.0, noise=None, step_noise=None) -> jax.Array:
        """The decoder's images `[b, size, size, 3]` in [-1, 1]."""
        batch = image_embeddings.shape[0]
        if noise is None:
            noise = jax.random.normal(jax.random.fold_in(rng, 0), (batch, size, size, 3))
        return _sample_decoder(self.modules["decoder"], self.schedules["decoder"], steps, guidance_scale,
                               self.params["decoder"], image_embeddings, text.tree(), _repeat(null, batch).tree(),
                               jnp.asarray(noise), rng, step_noise)

    def super_resolve(self, images, rng, *, size: int, steps: int = 7, noise=None, step_noise=None) -> jax.Array:
        """`images [b, h, w, 3]` in [-1, 1] to `[b, size, size, 3]` in [-1, 1]."""
        if noise is None:
            noise = jax.random.normal(jax.random.fold_in(rng, 0), (images.shape[0], size, size, 3))
        return _sample_super_res(self.modules["super_res_first"], self.modules["super_res_last"],
                                 self.schedules["super_res"], steps, self.params["super_res_first"],
                                 self.params["super_res_last"], images, jnp.asarray(noise), rng, step_noise)


def _repeat(text: TextConditioning, batch: int) -> TextConditioning:
    """The first row of `text` for each of `batch` rows."""
    return TextConditioning(*(jnp.broadcast_to(a[:1], (batch, *a.shape[1:])) for a in text.tree()))


@functools.partial(jax.jit, static_argnums=(0,))
def _encode(module, params, tokens):
    return module.apply({"params": params}, tokens)


def _sample(model_fn, schedule: karlo.StageSchedule, steps: int, noise, rng, step_noise, *, learned_variance=False):
    return samplers.sample(model_fn, make_schedule("cosine", schedule.num_timesteps), noise, rng, sampler="ddpm",
                           num_steps=steps, prediction=schedule.prediction, clip_x0=schedule.clip_range > 0,
                           clip_range=schedule.clip_range, step_noise=step_noise,
                           learned_variance=learned_variance)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample_prior(module, schedule, steps, guidance_scale, params, text, null, noise, rng, step_noise):
    def apply(z, t, condition):
        embeddings, hidden, mask = condition
        return module.apply({"params": params}, z, t, embeddings, hidden, mask)

    model_fn = samplers.classifier_free_guidance(apply, text, null, guidance_scale)
    return _sample(model_fn, schedule, steps, noise, rng, step_noise)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample_decoder(module, schedule, steps, guidance_scale, params, image_embeddings, text, null, noise, rng,
                    step_noise):
    def apply(x, t, condition):
        image_embedding, (embeddings, hidden, mask) = condition
        return module.apply({"params": params}, x, t, image_embedding, embeddings, hidden, mask)

    null_image = jnp.broadcast_to(params["null_image_embedding"], image_embeddings.shape)
    model_fn = samplers.classifier_free_guidance(apply, (image_embeddings, text), (null_image, null), guidance_scale,
                                                 learned_variance=schedule.learned_variance)
    images = _sample(model_fn, schedule, steps, noise, rng, step_noise, learned_variance=schedule.learned_variance)
    return jnp.clip(images, -1.0, 1.0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample_super_res(first, last, schedule, steps, first_params, last_params, low_res, noise, rng, step_noise):
    def model_fn(x, t):  # every step with `first` but the final one (t = 0), which `last` takes
        run = lambda module, params: lambda: module.apply({"params": params}, x, t, low_res)
        return jax.lax.cond(t[0] == 0, run(last, last_params), run(first, first_params))

    return jnp.clip(_sample(model_fn, schedule, steps, noise, rng, step_noise), -1.0, 1.0)
