"""Training the image tokenizer (VQ-VAE or dVAE), as `config.image_tokenizer` says.

`kind = "openai_dvae"` is OpenAI's released dVAE (`models/openai_dvae.py`): imported by
`run.py import-weights --kind openai-dvae`, never trained here.

Logged: reconstruction PSNR, codebook usage (fraction of codes used in the batch) and
perplexity (exp of the entropy of the batch's code histogram); pictured: validation images above
their reconstructions through the codes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax import viz
from dalle_jax.data import pipeline
from dalle_jax.models import dvae, pixels
from dalle_jax.models.dvae import DiscreteVAE
from dalle_jax.models.openai_dvae import DOWNSAMPLE_FACTOR, OpenAIDiscreteVAE
from dalle_jax.models.vqvae import VQVAE
from dalle_jax.nn import conv

KINDS = ("vqvae", "dvae", "openai_dvae")


def build_image_tokenizer(c) -> nn.Module:
    """The tokenizer that `config.image_tokenizer` describes."""
    if c.kind == "openai_dvae":
        return OpenAIDiscreteVAE(hidden=c.hidden, blocks_per_group=c.blocks_per_group, num_codes=c.num_codes,
                                 init_channels=c.init_channels, dtype=jnp.dtype(c.dtype))
    common = dict(num_codes=c.num_codes, code_dim=c.code_dim, channels=tuple(c.channels),
                  num_res_blocks=c.num_res_blocks, dtype=jnp.dtype(c.dtype))
    if c.kind == "vqvae":
        return VQVAE(decay=c.ema_decay, **common)
    if c.kind == "dvae":
        return DiscreteVAE(reconstruction_loss=c.reconstruction_loss, **common)
    raise ValueError(f"image_tokenizer.kind must be one of {KINDS}, got {c.kind!r}")


def downsample_factor(c) -> int:
    """How many pixels a code spans on each side: images `[H, W]` give `[H / f, W / f]` codes."""
    return DOWNSAMPLE_FACTOR if c.kind == "openai_dvae" else 2 ** len(c.channels)


def codebook_stats(codes, num_codes: int) -> dict[str, jax.Array]:
    histogram = jnp.bincount(codes.reshape(-1), length=num_codes) / codes.size
    entropy = -jnp.sum(jnp.where(histogram > 0, histogram * jnp.log(jnp.maximum(histogram, 1e-12)), 0.0))
    return {"codebook_usage": jnp.mean(histogram > 0), "codebook_perplexity": jnp.exp(entropy)}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTokenizerTask:
    model: nn.Module
    settings: Any  # config.image_tokenizer
    data: Any = None  # config.data: where the pictures' images come from
    name: str = "image_tokenizer"

    @classmethod
    def from_config(cls, config, workdir=None) -> "ImageTokenizerTask":
        del workdir
        return cls(build_image_tokenizer(config.image_tokenizer), config.image_tokenizer, config.data)

    @property
    def compiler_options(self):
        """`jax.jit`'s options for this task's programs, its training step and samplers: a convolutional model's."""
        return conv.compiler_options()

    @functools.cached_property
    def _round_trip(self):
        """Jitted `(variables, uint8 images)` to the images decoded from their codes."""
        def round_trip(variables, images):
            return self.model.apply(variables, self.model.apply(variables, images, method="encode"), method="decode")

        return jax.jit(round_trip, compiler_options=self.compiler_options)

    def pictures(self, params, model_state) -> dict[str, np.ndarray]:
        """Eight validation images (top row) above their reconstructions through the codes."""
        images = np.stack([e["image"] for e in pipeline.first_examples(self.data, "validation")])
        rebuilt = np.asarray(self._round_trip({"params": params, **model_state}, images))
        labels = ["original"] * len(images) + ["from its codes"] * len(images)
        return {"reconstructions": viz.picture([*images, *rebuilt], labels, columns=len(images))}

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        del rng
        return {"image": example["image"]}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        rngs = dict(zip(("params", "restart", "gumbel"), jax.random.split(rng, 3)))
        return self.model.init(rngs, batch["image"], train=False)

    def loss_fn(self, params, batch: dict, rng: jax.Array, *, step, model_state):
        images = batch["image"]
        variables = {"params": params, **model_state}
        loss_of = self._vqvae_loss if isinstance(self.model, VQVAE) else self._dvae_loss
        loss, metrics, reconstruction, codes, model_state = loss_of(variables, images, rng, step, model_state)
        metrics |= {"psnr": pixels.psnr(reconstruction, images), **codebook_stats(codes, self.settings.num_codes)}
        return loss, metrics, model_state

    def _vqvae_loss(self, variables, images, rng, step, model_state):
        """Reconstruction MSE + commitment; the EMA codebook update comes back as model state."""
        del step
        (reconstruction, codes, commitment), updates = self.model.apply(
            variables, images, train=True, rngs={"restart": rng}, mutable=["codebook"])
        mse = jnp.mean((reconstruction - pixels.to_unit_range(images)) ** 2)
        loss = mse + self.settings.commitment_weight * commitment
        return loss, {"mse": mse, "commitment": commitment}, reconstruction, codes, {**model_state, **updates}

    def _dvae_loss(self, variables, images, rng, step, model_state):
        """Reconstruction NLL + beta x KL to the uniform prior, with the paper's schedules."""
        s = self.settings
        temperature = dvae.temperature_at(step, s.temperature_start, s.temperature_end, s.temperature_anneal_steps)
        beta = dvae.kl_weight_at(step, s.kl_weight, s.kl_warmup_steps)
        output, logits = self.model.apply(variables, images, temperature=temperature, train=True, rngs={"gumbel": rng})
        if self.model.reconstruction_loss == "logit_laplace":
            nll = jnp.mean(dvae.logit_laplace_nll(output, images))
        else:
            nll = jnp.mean((output - pixels.to_unit_range(images)) ** 2)
        kl = jnp.mean(dvae.kl_to_uniform(logits))
        # Per-image sums (reconstruction over pixel values, KL over grid cells), per pixel value.
        loss = nll + beta * kl * logits[..., 0].size / images.size
        metrics = {"reconstruction_nll": nll, "kl": kl, "temperature": temperature, "kl_weight": beta}
        return loss, metrics, self.model.reconstruct(output), jnp.argmax(logits, -1), model_state
