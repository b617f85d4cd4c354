"""VQ-VAE with an exponential-moving-average codebook (van den Oord et al. 2017, appendix).

The codebook lives in the `codebook` collection, outside the optimizer: each training
call moves every code towards the mean of the encoder outputs assigned to it, and codes
that fall out of use are restarted at encoder outputs of the batch.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dalle_jax.models.pixels import to_uint8, to_unit_range
from dalle_jax.nn.conv import Decoder, Encoder


class EMAVectorQuantizer(nn.Module):
    """Nearest-code quantisation of `[..., code_dim]` vectors with straight-through gradients."""

    num_codes: int
    code_dim: int
    decay: float = 0.99
    epsilon: float = 1e-5
    restart_threshold: float = 0.03  # EMA usage (in assignments per step) under which a code restarts

    def setup(self):
        def codebook_variable(name, init):
            return self.variable("codebook", name, nn.with_logical_partitioning(init, ("vocab", "embed")))

        # Initial values are built lazily: only `init` has a "params" key.
        self.embedding = codebook_variable(
            "embedding", lambda: 0.1 * jax.random.normal(self.make_rng("params"), (self.num_codes, self.code_dim)))
        self.embed_sum = codebook_variable("embed_sum", lambda: self.embedding.value)  # sum = embedding * size
        self.cluster_size = self.variable(
            "codebook", "cluster_size", nn.with_logical_partitioning(lambda: jnp.ones((self.num_codes,)), ("vocab",)))

    def codes(self, z):
        """Index of the nearest code for each vector: `[...]` int32."""
        flat = z.reshape(-1, self.code_dim)
        emb = self.embedding.value
        distances = (jnp.sum(flat**2, 1, keepdims=True) - 2 * flat @ emb.T + jnp.sum(emb**2, 1)[None])
        return jnp.argmin(distances, axis=-1).reshape(z.shape[:-1]).astype(jnp.int32)

    def lookup(self, codes):
        return jnp.take(self.embedding.value, codes, axis=0)

    def __call__(self, z, *, train: bool):
        """(quantised z with straight-through gradient, codes, commitment loss)."""
        codes = self.codes(z)
        quantized = self.lookup(codes)
        commitment = jnp.mean((z - jax.lax.stop_gradient(quantized)) ** 2)
        if train and self.is_mutable_collection("codebook"):
            self._ema_update(jax.lax.stop_gradient(z).reshape(-1, self.code_dim), codes.reshape(-1))
        return z + jax.lax.stop_gradient(quantized - z), codes, commitment

    def _ema_update(self, flat, codes):
        one_hot = jax.nn.one_hot(codes, self.num_codes, dtype=flat.dtype)
        cluster_size = self.decay * self.cluster_size.value + (1 - self.decay) * one_hot.sum(0)
        embed_sum = self.decay * self.embed_sum.value + (1 - self.decay) * one_hot.T @ flat
        total = cluster_size.sum()  # Laplace smoothing keeps empty codes finite
        smoothed = (cluster_size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        embedding = embed_sum / smoothed[:, None]
        # Restart dead codes at random encoder outputs of this batch.
        dead = cluster_size < self.restart_threshold
        picks = jax.random.randint(self.make_rng("restart"), (self.num_codes,), 0, flat.shape[0])
        self.embedding.value = jnp.where(dead[:, None], flat[picks], embedding)
        self.embed_sum.value = jnp.where(dead[:, None], flat[picks], embed_sum)
        self.cluster_size.value = jnp.where(dead, 1.0, cluster_size)


class VQVAE(nn.Module):
    """Images `uint8 [batch, H, W, 3]` to codes `[batch, H/f, W/f]` and back, `f = 2**len(channels)`."""

    num_codes: int
    code_dim: int
    channels: Sequence[int]
    num_res_blocks: int = 1
    decay: float = 0.99
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.encoder = Encoder(self.channels, self.code_dim, self.num_res_blocks, self.dtype)
        self.quantizer = EMAVectorQuantizer(self.num_codes, self.code_dim, self.decay)
        self.decoder = Decoder(self.channels, 3, self.num_res_blocks, self.dtype)

    def __call__(self, images, *, train: bool = False):
        """(reconstruction in [-1, 1] `float32 [batch, H, W, 3]`, codes, commitment loss)."""
        z = self.encoder(to_unit_range(images)).astype(jnp.float32)
        quantized, codes, commitment = self.quantizer(z, train=train)
        return self.decoder(quantized), codes, commitment

    def encode(self, images):
        return self.quantizer.codes(self.encoder(to_unit_range(images)).astype(jnp.float32))

    def decode(self, codes):
        return to_uint8(self.decoder(self.quantizer.lookup(codes)))

