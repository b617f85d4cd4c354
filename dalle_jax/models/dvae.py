"""The discrete VAE of DALL·E (Ramesh et al. 2021, section 2.1 and appendix A).

The encoder gives logits over `num_codes` codes per grid cell. Training relaxes the
one-hot choice with the Gumbel-softmax at temperature `tau` (annealed from 1 to 1/16),
and penalises the KL divergence from a uniform prior (weight `beta`, raised from 0 to 6.6).
Reconstructions are scored with the logit-Laplace likelihood on pixels squeezed into
`[eps, 1 - eps]`, `eps = 0.1` (or with MSE). Inference takes the argmax code.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dalle_jax.models.pixels import to_uint8, to_unit_range
from dalle_jax.nn.conv import Decoder, Encoder

LOGIT_LAPLACE_EPS = 0.1


def map_pixels(x):
    """Pixels in [0, 1] squeezed into `[eps, 1 - eps]`, where the logit-Laplace density is finite."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def unmap_pixels(x):
    """The inverse of `map_pixels`, clipped to [0, 1]."""
    return jnp.clip((x - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS), 0.0, 1.0)


class DiscreteVAE(nn.Module):
    """Images `uint8 [batch, H, W, 3]` to codes `[batch, H/f, W/f]` and back, `f = 2**len(channels)`."""

    num_codes: int
    code_dim: int
    channels: Sequence[int]
    num_res_blocks: int = 1
    reconstruction_loss: str = "logit_laplace"  # or "mse"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.reconstruction_loss not in ("logit_laplace", "mse"):
            raise ValueError(f"reconstruction_loss must be 'logit_laplace' or 'mse', got {self.reconstruction_loss!r}")
        self.encoder = Encoder(self.channels, self.num_codes, self.num_res_blocks, self.dtype)
        self.codebook = self.param("codebook", nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("vocab", "embed")), (self.num_codes, self.code_dim))
        out_channels = 6 if self.reconstruction_loss == "logit_laplace" else 3
        self.decoder = Decoder(self.channels, out_channels, self.num_res_blocks, self.dtype)

    def __call__(self, images, *, temperature=1.0, train: bool = False):
        """(decoder output `[batch, H, W, 6 or 3]`, code logits `[batch, h, w, num_codes]`).

        Training draws a Gumbel-softmax sample (rng stream "gumbel"); otherwise the argmax code.
        """
        logits = self.encoder(to_unit_range(images)).astype(jnp.float32)
        if train:
            gumbel = jax.random.gumbel(self.make_rng("gumbel"), logits.shape)
            soft_codes = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
        else:
            soft_codes = jax.nn.one_hot(jnp.argmax(logits, -1), self.num_codes)
        return self.decoder(soft_codes @ self.codebook), logits

    def reconstruct(self, decoder_output):
        """The decoder output as an image in [-1, 1]."""
        if self.reconstruction_loss == "mse":
            return decoder_output
        return unmap_pixels(jax.nn.sigmoid(decoder_output[..., :3])) * 2.0 - 1.0

    def encode(self, images):
        return jnp.argmax(self.encoder(to_unit_range(images)), axis=-1).astype(jnp.int32)

    def decode(self, codes):
        return to_uint8(self.reconstruct(self.decoder(jnp.take(self.codebook, codes, axis=0))))


def logit_laplace_nll(decoder_output, images):
    """Per-pixel negative log-likelihood of `uint8` images under the logit-Laplace
    distribution with location `decoder_output[..., :3]` and log-scale `[..., 3:]`."""
    mu, log_scale = decoder_output[..., :3], decoder_output[..., 3:]
    x = map_pixels(images.astype(jnp.float32) / 255.0)
    logit_x = jnp.log(x) - jnp.log1p(-x)
    return jnp.abs(logit_x - mu) * jnp.exp(-log_scale) + log_scale + jnp.log(2.0 * x * (1.0 - x))


def kl_to_uniform(logits):
    """KL(q || uniform) per grid cell, `q = softmax(logits)`."""
    log_q = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + jnp.log(logits.shape[-1])


def temperature_at(step, start: float, end: float, anneal_steps: int):
    """Geometric interpolation from `start` to `end` over `anneal_steps`, then `end`."""
    progress = jnp.clip(step / max(anneal_steps, 1), 0.0, 1.0)
    return start * (end / start) ** progress


def kl_weight_at(step, max_weight: float, warmup_steps: int):
    """Linear rise from 0 to `max_weight` over `warmup_steps`."""
    return max_weight * jnp.clip(step / max(warmup_steps, 1), 0.0, 1.0)
