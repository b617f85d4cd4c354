"""The ADM / GLIDE UNet (Dhariwal & Nichol 2021; Nichol et al. 2022) for diffusion models.

- Residual blocks with GroupNorm and scale-shift conditioning: `norm(h) · (1 + s) + b`,
  `(s, b)` projected from the conditioning embedding (timestep plus whatever the model
  adds to it).
- Self-attention at the chosen resolutions. When the model passes `context` tokens, the
  attention layers also attend to them (GLIDE's encoder tokens: the caption, and unCLIP's
  extra CLIP tokens), projected to keys and values beside the pixels' own.
- Each residual branch and the output convolution start at zero, so an untrained UNet
  outputs exactly 0.

Options beyond ADM's defaults load Karlo's UNets (diffusers' UNet2DConditionModel and
UNet2DModel, `weights/karlo.py`): resampling inside residual blocks (`resblock_updown`, BigGAN's
and ADM's option), additive timestep conditioning (`scale_shift=False`), heads of a fixed width,
the GroupNorm's groups and ε, and a mask over the context tokens.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dalle_jax.nn.attention import dense_init, dot_product_attention, resolve_implementation
from dalle_jax.nn.conv import conv
from dalle_jax.nn.transformer import rematerialized

_ZERO = nn.with_logical_partitioning(nn.initializers.zeros, ("channels",))
ATTENTION_FALLBACK = "einsum_vjp"  # what `attention_impl="auto"` runs where cuDNN cannot


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
    """Sinusoidal embedding `float32 [batch, dim]` of timesteps `[batch]` (Vaswani et al. 2017)."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[:, None] * frequencies[None]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def dense(features: int, names=("embed", "mlp"), dtype=jnp.float32, zero: bool = False, name=None) -> nn.Dense:
    kernel = nn.with_logical_partitioning(nn.initializers.zeros, names) if zero else dense_init(names)
    return nn.Dense(features, dtype=dtype, kernel_init=kernel, name=name,
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[-1:]))


class TimestepMLP(nn.Module):
    """Timesteps `[batch]` to the conditioning embedding `[batch, dim]`: `frequencies` sinusoids
    (`dim // 4` if 0), then an MLP."""

    dim: int
    dtype: jnp.dtype = jnp.float32
    frequencies: int = 0

    @nn.compact
    def __call__(self, t):
        h = dense(self.dim, dtype=self.dtype)(timestep_embedding(t, self.frequencies or self.dim // 4))
        return dense(self.dim, ("mlp", "embed"), dtype=self.dtype)(nn.silu(h))


NORM_EPS = 1e-6  # flax's GroupNorm default, which this project's UNets train with


def group_normalize(x, scale, bias, groups: int, eps: float = NORM_EPS):
    """GroupNorm (Wu & He 2018) of `x [b, ..., C]`: each example's channels in `groups` groups of
    `C / groups`, normalised over the group's channels and positions, then `· scale [C] + bias [C]`.
    float32 out, statistics in float32 (flax's `nn.GroupNorm`, with its `E[x²] - E[x]²` variance).

    It sums each channel over the positions first and then the groups' channels, and applies the
    result as one per-channel `x · gain + offset`. On XLA:CPU this runs the UNets' norms 1.1-5.4× faster
    forward (1.2-3.6× with the backward) than a reduction over each group's strided block (flax's way),
    most for narrow groups (docs/performance.md, "GroupNorm by channel sums")."""
    channels = x.shape[-1]
    if channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels cannot be split into {groups} groups")
    per_group = channels // groups
    x = x.astype(jnp.float32)
    positions = tuple(range(1, x.ndim - 1))
    count = math.prod(x.shape[1:-1]) * per_group
    group_mean = lambda y: y.sum(positions).reshape(-1, groups, per_group).sum(-1) / count  # [b, groups]
    mean = group_mean(x)
    variance = jnp.maximum(group_mean(x * x) - mean * mean, 0.0)
    by_channel = lambda y: jnp.repeat(y, per_group, axis=1).reshape(x.shape[:1] + (1,) * len(positions) + (channels,))
    gain = by_channel(jax.lax.rsqrt(variance + eps)) * scale
    return x * gain + (bias - by_channel(mean) * gain)


class GroupNorm(nn.Module):
    """`group_normalize` with learnt `scale` and `bias`: flax's `nn.GroupNorm` (the same parameters,
    names and statistics) computed by channel sums; `dtype` is the output's."""

    num_groups: int
    epsilon: float = NORM_EPS
    dtype: jnp.dtype = jnp.float32
    scale_init: nn.initializers.Initializer = nn.initializers.ones
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", self.scale_init, x.shape[-1:], jnp.float32)
        bias = self.param("bias", self.bias_init, x.shape[-1:], jnp.float32)
        return group_normalize(x, scale, bias, self.num_groups, self.epsilon).astype(self.dtype)


def group_norm(channels: int, dtype, name=None, groups: int = 0, eps: float = NORM_EPS) -> GroupNorm:
    """GroupNorm over `channels` in `groups` groups (0: gcd(32, channels))."""
    return GroupNorm(num_groups=groups or math.gcd(32, channels), epsilon=eps, dtype=dtype, name=name,
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("channels",)),
                     bias_init=_ZERO)


def zero_conv(features: int, dtype, name=None) -> nn.Conv:
    return conv(features, dtype=dtype, name=name, kernel_init=nn.initializers.zeros)


def resample(x, how: str):
    """`x [b, H, W, C]` halved by 2×2 averages (`down`), doubled by repetition (`up`), or as it is."""
    b, height, width, channels = x.shape
    if how == "down":
        return x.reshape(b, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))
    if how == "up":
        return jax.image.resize(x, (b, 2 * height, 2 * width, channels), "nearest")
    return x


class ResBlock(nn.Module):
    """`x [b, H, W, C]`, `embedding [b, E]` to `[b, H', W', out_channels]`: `H' = H` unless
    `resample` is `down` (H / 2) or `up` (2 H), applied to both branches after the first norm.
    The embedding scales and shifts the second norm's output (`scale_shift`), or is added
    before it."""

    out_channels: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    resample: str = "none"  # or "down", "up"
    scale_shift: bool = True
    norm_groups: int = 0
    norm_eps: float = NORM_EPS

    @nn.compact
    def __call__(self, x, embedding, deterministic: bool = True):
        norm = lambda channels: group_norm(channels, self.dtype, groups=self.norm_groups, eps=self.norm_eps)
        h = resample(nn.silu(norm(x.shape[-1])(x)), self.resample)
        x = resample(x, self.resample)
        h = conv(self.out_channels, dtype=self.dtype)(h)
        conditioning = dense((2 if self.scale_shift else 1) * self.out_channels, ("embed", "channels"),
                             self.dtype)(nn.silu(embedding))[:, None, None]
        if self.scale_shift:
            scale, shift = jnp.split(conditioning, 2, axis=-1)
            h = norm(self.out_channels)(h) * (1 + scale) + shift
        else:
            h = norm(self.out_channels)(h + conditioning)
        h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=deterministic)
        h = zero_conv(self.out_channels, self.dtype)(h)
        skip = x if x.shape[-1] == self.out_channels else conv(self.out_channels, kernel=1, dtype=self.dtype)(x)
        return skip + h


class AttentionBlock(nn.Module):
    """`x + attention(norm(x))` over the `H·W` positions, and over `context [b, n, D]` if given
    (only its tokens where `context_mask [b, n]` is True). Heads are `num_heads`, or as many as
    `head_channels` wide."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "auto"  # one of ATTENTION_IMPLEMENTATIONS; `auto` falls back to ATTENTION_FALLBACK
    head_channels: int = 0
    norm_groups: int = 0
    norm_eps: float = NORM_EPS

    @nn.compact
    def __call__(self, x, context=None, context_mask=None):
        batch, height, width, channels = x.shape
        num_heads = channels // self.head_channels if self.head_channels else self.num_heads
        if channels % num_heads:
            raise ValueError(f"attention over {channels} channels cannot be split into {num_heads} heads")
        head_dim = channels // num_heads
        h = group_norm(channels, self.dtype, groups=self.norm_groups, eps=self.norm_eps)(x)
        h = h.reshape(batch, height * width, channels)
        heads = lambda y: y.reshape(*y.shape[:2], num_heads, head_dim)
        qkv = dense(3 * channels, ("channels_in", "mlp"), self.dtype, name="qkv")(h)
        query, key, value = (heads(y) for y in jnp.split(qkv, 3, axis=-1))
        if context is not None:
            context_kv = dense(2 * channels, ("embed", "mlp"), self.dtype, name="context_kv")(context)
            context_key, context_value = (heads(y) for y in jnp.split(context_kv, 2, axis=-1))
            key, value = jnp.concatenate([context_key, key], 1), jnp.concatenate([context_value, value], 1)
        mask = None
        if context is not None and context_mask is not None:  # the pixels' own keys are always seen
            keys = jnp.concatenate([context_mask, jnp.ones((batch, height * width), bool)], axis=1)
            mask = jnp.broadcast_to(keys[:, None], (batch, height * width, keys.shape[1]))
        implementation = resolve_implementation(self.attention_impl, ATTENTION_FALLBACK, dtype=self.dtype,
                                                masked=mask is not None, cached=False, head_dim=head_dim)
        out = dot_product_attention(query, key, value, mask, implementation=implementation)
        out = out.reshape(batch, height * width, channels)
        out = dense(channels, ("mlp", "channels"), self.dtype, zero=True, name="out")(out)
        return x + out.reshape(x.shape)


class UNet(nn.Module):
    """`x [b, H, W, in]`, conditioning `embedding [b, E]`, optional `context [b, n, D]` to `[b, H, W, out]`.

    `channel_mults[i]` sets the width of level `i` (resolution `H / 2**i`); each level has
    `num_res_blocks` residual blocks, with attention where `H / 2**i` is in
    `attention_resolutions`; the middle block always attends unless that tuple is empty.
    Going down a level, a stride-2 convolution halves the resolution; going up, the features
    are resized (nearest) and convolved at the new resolution (ADM); `upsample_at_low_res`
    convolves them before the resize instead, at a quarter of the FLOPs. With
    `resblock_updown`, a residual block does either (its `resample`). `context_mask` hides
    context tokens from every attention layer.
    """

    base_channels: int
    channel_mults: Sequence[int]
    num_res_blocks: int
    attention_resolutions: Sequence[int]
    num_heads: int
    out_channels: int
    dropout: float = 0.0
    upsample_at_low_res: bool = False
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"  # what the backward pass recomputes of each block: a key of `REMAT_POLICIES`
    attention_impl: str = "auto"  # one of `nn.attention.ATTENTION_IMPLEMENTATIONS`
    resblock_updown: bool = False
    scale_shift: bool = True  # how residual blocks read the embedding (`ResBlock`)
    head_channels: int = 0  # > 0: heads of this width instead of `num_heads`
    norm_groups: int = 0  # 0: gcd(32, channels)
    norm_eps: float = NORM_EPS

    @nn.compact
    def __call__(self, x, embedding, context=None, *, context_mask=None, deterministic: bool = True):
        resolution = x.shape[1]
        if resolution % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(f"{resolution}×{resolution} inputs cannot be halved {len(self.channel_mults) - 1} times")
        res_block = rematerialized(ResBlock, self.remat, static_argnums=(3,))  # (self, x, embedding, deterministic)
        attention_block = rematerialized(AttentionBlock, self.remat)
        norm = dict(norm_groups=self.norm_groups, norm_eps=self.norm_eps)
        block = lambda ch, h, how="none": res_block(ch, self.dropout, self.dtype, how, self.scale_shift, **norm)(
            h, embedding, deterministic)
        attention = lambda h: attention_block(self.num_heads, self.dtype, self.attention_impl, self.head_channels,
                                              **norm)(h, context, context_mask)
        attend = lambda h, size: attention(h) if size in self.attention_resolutions else h
        h = conv(self.base_channels, dtype=self.dtype)(x.astype(self.dtype))
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            size = resolution // 2 ** level
            for _ in range(self.num_res_blocks):
                h = attend(block(self.base_channels * mult, h), size)
                skips.append(h)
            if level < len(self.channel_mults) - 1:
                h = (block(h.shape[-1], h, "down") if self.resblock_updown else
                     conv(h.shape[-1], kernel=3, stride=2, dtype=self.dtype)(h))
                skips.append(h)
        h = block(h.shape[-1], h)
        if self.attention_resolutions:
            h = attention(h)
        h = block(h.shape[-1], h)
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            size = resolution // 2 ** level
            for _ in range(self.num_res_blocks + 1):
                h = attend(block(self.base_channels * mult, jnp.concatenate([h, skips.pop()], axis=-1)), size)
            if level > 0 and self.resblock_updown:
                h = block(h.shape[-1], h, "up")
            elif level > 0:
                b, height, width, channels = h.shape
                resize = lambda y: jax.image.resize(y, (b, 2 * height, 2 * width, channels), "nearest")
                up_conv = conv(channels, dtype=self.dtype)
                h = resize(up_conv(h)) if self.upsample_at_low_res else up_conv(resize(h))
        h = nn.silu(group_norm(h.shape[-1], self.dtype, groups=self.norm_groups, eps=self.norm_eps)(h))
        return zero_conv(self.out_channels, jnp.float32)(h).astype(jnp.float32)
