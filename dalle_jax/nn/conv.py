"""Convolutions, and the convolutional encoder and decoder of the image tokenizers.

`conv` is the UNets' and the tokenizers' 2-D convolution (`nn.Conv` over `conv_nhwc`). The
encoder's levels halve the resolution and the decoder's double it, so `len(channels)` levels
give a grid `2**len(channels)` times smaller than the image.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_CONV_AXES = ("height", "width", "channels_in", "channels")  # kernel: [kh, kw, in, out]
_NHWC = ("NHWC", "HWIO", "NHWC")


def kernel_grad_by_taps(x, dy, kernel_size: tuple[int, int], strides: tuple[int, int], padding):
    """The kernel's gradient `[kh, kw, in, out]` of a convolution of `x [b, H, W, in]` whose
    output has gradient `dy [b, h, w, out]`: for each kernel tap, one matrix product of the
    input pixels that tap reads against `dy`. `padding` is `((top, bottom), (left, right))`."""
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    (stride_h, stride_w), (height, width) = strides, dy.shape[1:3]
    rows = lambda i: slice(i, i + stride_h * (height - 1) + 1, stride_h)  # the input rows tap row i reads
    columns = lambda j: slice(j, j + stride_w * (width - 1) + 1, stride_w)
    window = lambda i, j: x[:, rows(i), columns(j)]
    return jnp.stack([jnp.stack([jnp.einsum("bhwc,bhwd->cd", window(i, j), dy) for j in range(kernel_size[1])])
                      for i in range(kernel_size[0])])


# Whether the CPU takes the kernel gradient by taps where `_taps_are_faster`; read when a step is
# traced. `bench/conv_cpu.py --step` sets it False to time XLA's own gradient against it.
KERNEL_GRAD_BY_TAPS_ON_CPU = True


def _taps_are_faster(kernel_shape) -> bool:
    # XLA:CPU's own kernel gradient runs at 4-17 GFLOP/s for 1×1 kernels and for 64 or more output
    # channels, against 20-50 by taps (2-core CPU; docs/performance.md, "Convolutions on the CPU").
    return KERNEL_GRAD_BY_TAPS_ON_CPU and (kernel_shape[:2] == (1, 1) or kernel_shape[3] >= 64)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x, kernel, strides: tuple[int, int], padding):
    """`lax.conv_general_dilated` over NHWC inputs and HWIO kernels, with explicit `padding`
    pairs. Its gradient is XLA's, except on the CPU, where the kernel's gradient is taken by
    `kernel_grad_by_taps` for the shapes XLA:CPU is slow at (`_taps_are_faster`)."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _conv_forward(x, kernel, strides, padding):
    return conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_backward(strides, padding, residuals, dy):
    x, kernel = residuals
    plain = lambda x, kernel: lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)
    dx = jax.vjp(lambda x: plain(x, kernel), x)[1](dy)[0]
    by_xla = lambda: jax.vjp(lambda kernel: plain(x, kernel), kernel)[1](dy)[0]
    if not _taps_are_faster(kernel.shape):
        return dx, by_xla()
    by_taps = lambda: kernel_grad_by_taps(x, dy, kernel.shape[:2], strides, padding).astype(kernel.dtype)
    return dx, lax.platform_dependent(cpu=by_taps, default=by_xla)


conv_nhwc.defvjp(_conv_forward, _conv_backward)


def _conv_general_dilated(lhs, rhs, window_strides, padding, **unused):
    """`nn.Conv`'s hook for the undilated, ungrouped NHWC convolutions that `conv` builds."""
    del unused  # lhs and rhs dilation (1), the dimension numbers (NHWC), precision (default)
    strides = tuple(window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    return conv_nhwc(lhs, rhs, strides, tuple(map(tuple, padding)))


def conv(features: int, kernel: int = 3, stride: int = 1, dtype=jnp.float32, name: str | None = None,
         kernel_init=nn.initializers.lecun_normal()) -> nn.Conv:
    """A `kernel × kernel` convolution, SAME padding, logically partitioned (`conv_nhwc`)."""
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=dtype, name=name,
                   conv_general_dilated=_conv_general_dilated,
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
