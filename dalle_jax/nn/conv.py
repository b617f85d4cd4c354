"""Convolutional encoder and decoder for the image tokenizers.

Each level halves (encoder) or doubles (decoder) the resolution, so `len(channels)`
levels give a grid `2**len(channels)` times smaller than the image.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_CONV_AXES = ("height", "width", None, "channels")  # kernel: [kh, kw, in, out]


def conv(features: int, kernel: int = 3, stride: int = 1, dtype=jnp.float32, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), _CONV_AXES),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)))


class ResBlock(nn.Module):
    """`x + conv(relu(conv(relu(x))))`, channels kept."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        h = conv(features, dtype=self.dtype)(nn.relu(x))
        h = conv(features, dtype=self.dtype)(nn.relu(h))
        return x + h


class Encoder(nn.Module):
    """`[batch, H, W, 3]` in [-1, 1] to `[batch, H / 2**levels, W / 2**levels, out_dim]`."""

    channels: Sequence[int]
    out_dim: int
    num_res_blocks: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = conv(self.channels[0], dtype=self.dtype)(x.astype(self.dtype))
        for features in self.channels:
            x = conv(features, kernel=4, stride=2, dtype=self.dtype)(nn.relu(x))
            for _ in range(self.num_res_blocks):
                x = ResBlock(self.dtype)(x)
        return conv(self.out_dim, kernel=1, dtype=self.dtype)(nn.relu(x))


class Decoder(nn.Module):
    """`[batch, h, w, dim]` to `[batch, h * 2**levels, w * 2**levels, out_channels]`."""

    channels: Sequence[int]  # listed as for the encoder; used in reverse
    out_channels: int
    num_res_blocks: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z):
        x = conv(self.channels[-1], dtype=self.dtype)(z.astype(self.dtype))
        for features in reversed(self.channels):
            for _ in range(self.num_res_blocks):
                x = ResBlock(self.dtype)(x)
            batch, height, width, _ = x.shape
            x = jax.image.resize(x, (batch, 2 * height, 2 * width, x.shape[-1]), "nearest")
            x = conv(features, dtype=self.dtype)(nn.relu(x))
        return conv(self.out_channels, dtype=jnp.float32)(nn.relu(x))
