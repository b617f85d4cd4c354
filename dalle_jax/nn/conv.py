"""Convolutions, and the convolutional encoder and decoder of the image tokenizers.

`conv` is the UNets' and the tokenizers' 2-D convolution; `compiler_options` is how the programs
made of them compile. The encoder's levels halve the resolution and the decoder's double it, so
`len(channels)` levels give a grid `2**len(channels)` times smaller than the image.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_CONV_AXES = ("height", "width", "channels_in", "channels")  # kernel: [kh, kw, in, out]

# XLA:CPU (JAX 0.10) hands convolutions, matrix products and their neighbours to YNNPACK, which runs
# the UNets' convolutions and their gradients at as little as half the rate of XLA's own kernels on a
# 2-core CPU, while the transformers' steps gain from it. Its reductions, though, beat XLA's: the
# decoder's step is 5-8% faster with them (docs/performance.md, "The decoder UNet on this CPU against
# dalle2-pytorch"). So the programs made mostly of convolutions hand YNNPACK their reductions only.
YNNPACK_REDUCTIONS_ONLY = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def compiler_options() -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a program made mostly of convolutions (a UNet, an image
    tokenizer): `YNNPACK_REDUCTIONS_ONLY` on a CPU whose XLA has the option, else None (XLA's defaults)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=YNNPACK_REDUCTIONS_ONLY).lower(0.0).compile()
    except jax.errors.JaxRuntimeError:  # an XLA before or after YNNPACK's option
        return None
    return YNNPACK_REDUCTIONS_ONLY


def conv(features: int, kernel: int = 3, stride: int = 1, dtype=jnp.float32, name: str | None = None,
         kernel_init=nn.initializers.lecun_normal()) -> nn.Conv:
    """A `kernel × kernel` convolution over NHWC inputs, SAME padding, logically partitioned."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(kernel_init, _CONV_AXES),
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
