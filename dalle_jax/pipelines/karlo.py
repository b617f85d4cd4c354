"""Karlo's unCLIP pipeline in JAX: prompt → CLIP text encoder → prior (image embedding) →
decoder (64 px) → super-resolution (256 px), as diffusers' UnCLIPPipeline runs it; with
`candidates > 1`, CLIP keeps the decoder draw nearest each prompt before super-resolution, as
this project's own unCLIP does (its image encoder: the image-variation snapshot's).

Each stage samples with this project's `diffusion.samplers.sample` and classifier-free guidance,
as its `StageSampling` says: by default DDPM on the respaced cosine schedule, which is what
Karlo's UnCLIPScheduler computes, at diffusers' steps and scales; DDIM and DPM-Solver++ use the
decoder's ε alone (its learned variance is DDPM's). The super-resolution stage takes every step
but the last with `super_res_first` and the last with `super_res_last`. Every stage is one jitted
function of its parameters (passed in, not closed over, so that a billion parameters never become
constants of the compiled program).
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
from dalle_jax.eval import rerank
from dalle_jax.models.pixels import to_uint8
from dalle_jax.nn import conv
from dalle_jax.weights import karlo

STAGES = ("prior", "decoder", "super_res")


@dataclasses.dataclass(frozen=True)
class StageSampling:
    """How one stage samples: a sampler of `samplers.SAMPLERS`, its steps and η, and the guidance
    scale, applied where `t / T` lies in `guidance_interval` (everywhere if None)."""

    num_steps: int
    guidance_scale: float = 1.0
    sampler: str = "ddpm"
    eta: float = 0.0
    guidance_interval: tuple[float, float] | None = None


# diffusers' UnCLIPPipeline defaults (the super-resolution stage is not guided)
DEFAULT_SAMPLING = {"prior": StageSampling(25, 4.0), "decoder": StageSampling(25, 8.0), "super_res": StageSampling(7)}


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
    """A loaded Karlo snapshot: its modules and parameters by component, and how each stage samples."""

    snapshot: pathlib.Path
    modules: dict[str, Any]  # text_encoder, prior, decoder, super_res_first, super_res_last[, image_encoder]
    params: dict[str, Any]
    tokenizer: Any
    prior_statistics: tuple[np.ndarray, np.ndarray]  # clip_mean, clip_std
    schedules: dict[str, karlo.StageSchedule]  # by stage
    image_sizes: tuple[int, int]  # the decoder's and the super-resolution's (64 and 256 for Karlo)

    @classmethod
    def load(cls, snapshot: str | pathlib.Path, dtype=jnp.float32,
             image_encoder_snapshot: str | pathlib.Path | None = None) -> "Karlo":
        """Every component of a Karlo snapshot (diffusers layout), one at a time, in `dtype`; the
        image encoder too where the snapshot has one (the image-variation snapshot), or from
        `image_encoder_snapshot` (that snapshot's, for reranking the text-to-image snapshot's draws)."""
        snapshot = pathlib.Path(snapshot)
        modules, params = {}, {}
        modules["text_encoder"], params["text_encoder"], tokenizer = karlo.load_text_encoder(snapshot, dtype)
        prior = karlo.load_prior(snapshot, dtype)
        modules["prior"], params["prior"] = prior.module, prior.params
        modules["decoder"], params["decoder"] = karlo.load_decoder(snapshot, dtype)
        for name in ("super_res_first", "super_res_last"):
            modules[name], params[name] = karlo.load_super_res(snapshot, name, dtype)
        if image_encoder_snapshot or (snapshot / "image_encoder").is_dir():
            modules["image_encoder"], params["image_encoder"] = karlo.load_image_encoder(
                pathlib.Path(image_encoder_snapshot or snapshot), dtype)
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

    def generate(self, prompts: Sequence[str], rng, sampling: dict[str, StageSampling] = DEFAULT_SAMPLING,
                 candidates: int = 1) -> np.ndarray:
        """`uint8 [len(prompts), S, S, 3]`: one image per prompt (repeat a prompt for more). With
        `candidates > 1`, each prompt's image is the one of that many prior-and-decoder draws
        whose CLIP image embedding is nearest the prompt's (`rerank.best_of_candidates`), super-resolved."""
        if candidates > 1:
            self._image_encoder()  # refused before sampling if there is none
        repeated = [prompt for prompt in prompts for _ in range(candidates)]
        text, null = self.encode_text(repeated), self.encode_text([""])
        prior_key, decoder_key, super_res_key = jax.random.split(rng, 3)
        embeddings = self.image_embeddings(text, null, prior_key, sampling["prior"])
        small = self.decode(embeddings, text, null, decoder_key, sampling["decoder"], size=self.image_sizes[0])
        if candidates > 1:  # CLIP reads the prompts' embeddings already encoded for the prior
            prompt_embeddings = _unit(text.embeddings[::candidates])
            small = rerank.best_of_candidates(small, prompts, self.embed_images, lambda _: prompt_embeddings)
        return self._super_resolved(small, super_res_key, sampling)

    def variations(self, image: np.ndarray, num: int, rng,
                   sampling: dict[str, StageSampling] = DEFAULT_SAMPLING) -> np.ndarray:
        """`uint8 [num, S, S, 3]` decoded from `image`'s CLIP embedding (`uint8 [s, s, 3]` at
        `image_encoder_size`), with the empty prompt, as diffusers' UnCLIPImageVariationPipeline."""
        embedding = _encode(*self._image_encoder(), jnp.asarray(image[None]))
        empty = self.encode_text([""] * num)
        decoder_key, super_res_key = jax.random.split(rng)
        small = self.decode(jnp.repeat(embedding, num, axis=0), empty, empty, decoder_key, sampling["decoder"],
                            size=self.image_sizes[0])
        return self._super_resolved(small, super_res_key, sampling)

    def _super_resolved(self, small, rng, sampling) -> np.ndarray:
        return np.asarray(to_uint8(self.super_resolve(small, rng, sampling["super_res"], size=self.image_sizes[1])))

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """CLIP's unit image embeddings `[n, P]` of `uint8 [n, s, s, 3]` images (resized to the encoder's size)."""
        return _unit(_encode(*self._image_encoder(), jnp.asarray(images)))

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        """CLIP's unit text embeddings `[n, P]` of `prompts`."""
        return _unit(self.encode_text(prompts).embeddings)

    # -- the stages --------------------------------------------------------------------------

    def encode_text(self, prompts: Sequence[str]) -> TextConditioning:
        length = self.modules["text_encoder"].text.length
        tokens = self.tokenizer.encode(list(prompts), length)
        embeddings, hidden = _encode(self.modules["text_encoder"], self.params["text_encoder"], jnp.asarray(tokens))
        return TextConditioning(embeddings, hidden, jnp.asarray(karlo.text_mask(tokens, self.tokenizer.eos_id)))

    def image_embeddings(self, text: TextConditioning, null: TextConditioning, rng,
                         sampling: StageSampling = DEFAULT_SAMPLING["prior"], *, noise=None,
                         step_noise=None) -> jax.Array:
        """The prior's CLIP image embeddings `[b, P]` for the prompts of `text` (`null`: the empty prompt's)."""
        batch = text.embeddings.shape[0]
        noise = jax.random.normal(jax.random.fold_in(rng, 0), (batch, self.embedding_dim)) if noise is None else noise
        mean, std = self.prior_statistics
        return _sample_prior(self.modules["prior"], self.schedules["prior"], sampling, self.params["prior"], text.tree(), _repeat(null, batch).tree(), jnp.asarray(noise),
                             rng, step_noise) * std + mean

    def decode(self, image_embeddings, text: TextConditioning, null: TextConditioning, rng,
               sampling: StageSampling = DEFAULT_SAMPLING["decoder"], *, size: int, noise=None,
               step_noise=None) -> jax.Array:
        """The decoder's images `[b, size, size, 3]` in [-1, 1]."""
        batch = image_embeddings.shape[0]
        if noise is None:
            noise = jax.random.normal(jax.random.fold_in(rng, 0), (batch, size, size, 3))
        return _sample_decoder(self.modules["decoder"], self.schedules["decoder"], sampling, self.params["decoder"],
                               image_embeddings, text.tree(), _repeat(null, batch).tree(), jnp.asarray(noise), rng,
                               step_noise)

    def super_resolve(self, images, rng, sampling: StageSampling = DEFAULT_SAMPLING["super_res"], *, size: int,
                      noise=None, step_noise=None) -> jax.Array:
        """`images [b, h, w, 3]` in [-1, 1] to `[b, size, size, 3]` in [-1, 1]."""
        if noise is None:
            noise = jax.random.normal(jax.random.fold_in(rng, 0), (images.shape[0], size, size, 3))
        return _sample_super_res(self.modules["super_res_first"], self.modules["super_res_last"],
                                 self.schedules["super_res"], sampling, self.params["super_res_first"],
                                 self.params["super_res_last"], images, jnp.asarray(noise), rng, step_noise)


def _unit(embeddings) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float32)
    return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


def _repeat(text: TextConditioning, batch: int) -> TextConditioning:
    """The first row of `text` for each of `batch` rows."""
    return TextConditioning(*(jnp.broadcast_to(a[:1], (batch, *a.shape[1:])) for a in text.tree()))


@functools.partial(jax.jit, static_argnums=(0,))
def _encode(module, params, tokens):
    return module.apply({"params": params}, tokens)


def _guided(apply, condition, null, schedule: karlo.StageSchedule, sampling: StageSampling):
    interval = sampling.guidance_interval
    interval = None if interval is None else tuple(f * schedule.num_timesteps for f in interval)
    return samplers.classifier_free_guidance(apply, condition, null, sampling.guidance_scale, interval,
                                             learned_variance=schedule.learned_variance)


def _sample(model_fn, schedule: karlo.StageSchedule, sampling: StageSampling, noise, rng, step_noise):
    learned_variance = schedule.learned_variance and sampling.sampler == "ddpm"
    if schedule.learned_variance and not learned_variance:  # DDIM, DPM-Solver++: the prediction alone
        guided = model_fn
        model_fn = lambda x, t: jnp.split(guided(x, t), 2, axis=-1)[0]
    return samplers.sample(model_fn, make_schedule("cosine", schedule.num_timesteps), noise, rng,
                           sampler=sampling.sampler, num_steps=sampling.num_steps, eta=sampling.eta,
                           prediction=schedule.prediction, clip_x0=schedule.clip_range > 0,
                           clip_range=schedule.clip_range, step_noise=step_noise, learned_variance=learned_variance)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample_prior(module, schedule, sampling, params, text, null, noise, rng, step_noise):
    def apply(z, t, condition):
        embeddings, hidden, mask = condition
        return module.apply({"params": params}, z, t, embeddings, hidden, mask)

    return _sample(_guided(apply, text, null, schedule, sampling), schedule, sampling, noise, rng, step_noise)


def _unet_jit(fn, static_argnums):
    """`jax.jit` of a UNet's sampler with `conv.compiler_options()`, which are read at its first call."""
    jitted = functools.cache(lambda: jax.jit(fn, static_argnums=static_argnums,
                                             compiler_options=conv.compiler_options()))
    return functools.wraps(fn)(lambda *args: jitted()(*args))


@functools.partial(_unet_jit, static_argnums=(0, 1, 2))
def _sample_decoder(module, schedule, sampling, params, image_embeddings, text, null, noise, rng, step_noise):
    def apply(x, t, condition):
        image_embedding, (embeddings, hidden, mask) = condition
        return module.apply({"params": params}, x, t, image_embedding, embeddings, hidden, mask)

    null_image = jnp.broadcast_to(params["null_image_embedding"], image_embeddings.shape)
    model_fn = _guided(apply, (image_embeddings, text), (null_image, null), schedule, sampling)
    return jnp.clip(_sample(model_fn, schedule, sampling, noise, rng, step_noise), -1.0, 1.0)


@functools.partial(_unet_jit, static_argnums=(0, 1, 2, 3))
def _sample_super_res(first, last, schedule, sampling, first_params, last_params, low_res, noise, rng, step_noise):
    def model_fn(x, t):  # every step with `first` but the final one (t = 0), which `last` takes
        run = lambda module, params: lambda: module.apply({"params": params}, x, t, low_res)
        return jax.lax.cond(t[0] == 0, run(last, last_params), run(first, first_params))

    return jnp.clip(_sample(model_fn, schedule, sampling, noise, rng, step_noise), -1.0, 1.0)
