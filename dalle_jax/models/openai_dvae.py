"""OpenAI's released DALL·E discrete VAE (the `dall_e` package), in Flax, to run its weights.

The architecture of `dall_e/encoder.py` and `dall_e/decoder.py` (Ramesh et al. 2021, appendix A):
- blocks: `id_path(x) + post_gain · res_path(x)`, `post_gain = 1 / (4 · blocks_per_group)²`;
  `res_path` is four ReLU-then-convolution layers through a quarter of the output width
  (kernels 3, 3, 3, 1 in the encoder; 1, 3, 3, 3 in the decoder); `id_path` is a 1×1
  convolution where the width changes, else the identity.
- encoder: a 7×7 convolution to `hidden`, four groups of blocks of width 1, 2, 4, 8 × `hidden`
  with a 2×2 max-pool after each of the first three, then ReLU and a 1×1 convolution to
  `num_codes` logits: 256×256 pixels to 32×32 × 8,192.
- decoder: a 1×1 convolution of the one-hot codes to `init_channels`, four groups of width
  8, 4, 2, 1 × `hidden` with nearest 2× upsampling after each of the first three, then ReLU and
  a 1×1 convolution to 6 channels: each pixel's logit-Laplace location (RGB) and log-scale.
- pixels enter as `map_pixels(x / 255)` and leave as `unmap_pixels(sigmoid(location))`.

Module and parameter names follow the released state dict (`group_1/block_1/conv_1/kernel` is
`blocks.group_1.block_1.res_path.conv_1.w`), so `weights/openai_dvae.py` maps it by rule.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dalle_jax.models.dvae import map_pixels, unmap_pixels
from dalle_jax.nn.conv import conv

GROUPS = 4
DOWNSAMPLE_FACTOR = 2 ** (GROUPS - 1)  # three max-pools (encoder), three upsamplings (decoder)
ENCODER_KERNELS = (3, 3, 3, 1)
DECODER_KERNELS = (1, 3, 3, 3)


class Block(nn.Module):
    """The bottleneck residual block, `[batch, H, W, in]` to `[batch, H, W, width]`."""

    width: int
    kernels: Sequence[int]  # of res_path's four convolutions
    post_gain: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        identity = x if x.shape[-1] == self.width else conv(self.width, 1, dtype=self.dtype, name="id_path")(x)
        widths = (self.width // 4,) * 3 + (self.width,)
        h = x
        for i, (width, kernel) in enumerate(zip(widths, self.kernels), 1):
            h = conv(width, kernel, dtype=self.dtype, name=f"conv_{i}")(nn.relu(h))
        return identity + self.post_gain * h


class Group(nn.Module):
    """`num_blocks` blocks of one width, then a 2×2 max-pool, a nearest 2× upsampling or nothing."""

    width: int
    num_blocks: int
    kernels: Sequence[int]
    resample: str  # "pool", "upsample" or "none"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        post_gain = 1.0 / (GROUPS * self.num_blocks) ** 2
        for i in range(self.num_blocks):
            x = Block(self.width, self.kernels, post_gain, self.dtype, name=f"block_{i + 1}")(x)
        if self.resample == "pool":
            return nn.max_pool(x, (2, 2), strides=(2, 2))
        if self.resample == "upsample":
            return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return x


class Encoder(nn.Module):
    """`float32 [batch, H, W, 3]` in `map_pixels` range to code logits `[batch, H/8, W/8, num_codes]`."""

    hidden: int = 256
    blocks_per_group: int = 2
    num_codes: int = 8192
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = conv(self.hidden, 7, dtype=self.dtype, name="input")(x.astype(self.dtype))
        for g, multiple in enumerate((1, 2, 4, 8), 1):
            x = Group(multiple * self.hidden, self.blocks_per_group, ENCODER_KERNELS,
                      "pool" if g < GROUPS else "none", self.dtype, name=f"group_{g}")(x)
        return conv(self.num_codes, 1, dtype=jnp.float32, name="output_conv")(nn.relu(x))


class Decoder(nn.Module):
    """Codes `int32 [batch, h, w]` to logit-Laplace statistics `float32 [batch, 8h, 8w, 6]`."""

    hidden: int = 256
    blocks_per_group: int = 2
    num_codes: int = 8192
    init_channels: int = 128
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, codes):
        # The released decoder reads one-hot codes through a 1×1 convolution; a row lookup of its
        # kernel is the same arithmetic without the [batch, h, w, num_codes] one-hot tensor.
        kernel = self.param("input_kernel", nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), ("height", "width", "vocab", "channels")),
                            (1, 1, self.num_codes, self.init_channels))
        bias = self.param("input_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)),
                          (self.init_channels,))
        x = (jnp.take(kernel[0, 0], codes, axis=0) + bias).astype(self.dtype)
        for g, multiple in enumerate((8, 4, 2, 1), 1):
            x = Group(multiple * self.hidden, self.blocks_per_group, DECODER_KERNELS,
                      "upsample" if g < GROUPS else "none", self.dtype, name=f"group_{g}")(x)
        return conv(6, 1, dtype=jnp.float32, name="output_conv")(nn.relu(x)).astype(jnp.float32)


class OpenAIDiscreteVAE(nn.Module):
    """The released dVAE as an image tokenizer: `encode` uint8 images `[batch, H, W, 3]` to codes
    `int32 [batch, H/8, W/8]`, `decode` codes to uint8 images."""

    hidden: int = 256
    blocks_per_group: int = 2
    num_codes: int = 8192
    init_channels: int = 128
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.encoder = Encoder(self.hidden, self.blocks_per_group, self.num_codes, self.dtype)
        self.decoder = Decoder(self.hidden, self.blocks_per_group, self.num_codes, self.init_channels, self.dtype)

    def __call__(self, images, *, train: bool = False):
        """(decoder statistics `[batch, H, W, 6]` of the argmax codes, code logits). Inference only:
        the released weights are used as they are."""
        if train:
            raise ValueError("the OpenAI dVAE is imported (`run.py import-weights --kind openai-dvae`), not trained")
        logits = self.logits(images)
        return self.decoder(jnp.argmax(logits, -1)), logits

    def logits(self, images):
        """Code logits `float32 [batch, H/8, W/8, num_codes]` of uint8 images."""
        return self.encoder(map_pixels(images.astype(jnp.float32) / 255.0))

    def encode(self, images):
        return jnp.argmax(self.logits(images), axis=-1).astype(jnp.int32)

    def decode_unit(self, codes):
        """Images in [0, 1], `float32 [batch, H, W, 3]`: `unmap_pixels(sigmoid(location))`."""
        return unmap_pixels(nn.sigmoid(self.decoder(codes)[..., :3]))

    def decode(self, codes):
        return jnp.round(self.decode_unit(codes) * 255.0).astype(jnp.uint8)
