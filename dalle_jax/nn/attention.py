"""Masked multi-head self-attention with an optional key/value cache."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

KVCache = tuple[jax.Array, jax.Array]  # keys, values: [batch, cache_length, heads, head_dim]


def dense_init(names):
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def init_kv_cache(batch: int, length: int, num_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
    zeros = jnp.zeros((batch, length, num_heads, head_dim), dtype)
    return zeros, zeros


class SelfAttention(nn.Module):
    """Self-attention of `x [batch, length, embed]` under a boolean mask.

    Without a cache, `mask` is `[length, length]`. With one, `x` holds the positions
    `start .. start + length - 1`, their keys and values are written into the cache, and
    `mask` is `[length, cache_length]`: the rows of those positions.
    """

    num_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = False  # biases on the query, key, value and output projections (OpenAI CLIP has them)

    def _kernel(self, name, shape, names, in_axis, out_axis):
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)
        return self.param(name, nn.with_logical_partitioning(init, names), shape).astype(self.dtype)

    def _plus_bias(self, y, name, names):
        """`y` plus a learned bias over its trailing `len(names)` axes, if the layer has biases."""
        if not self.use_bias:
            return y
        shape = y.shape[-len(names):]
        return y + self.param(name, nn.with_logical_partitioning(nn.initializers.zeros, names), shape).astype(self.dtype)

    @nn.compact
    def __call__(self, x, mask, *, cache: KVCache | None = None, start=0):
        embed = x.shape[-1]
        x = x.astype(self.dtype)
        project = lambda name: self._plus_bias(jnp.einsum("ble,ehd->blhd", x, self._kernel(
            name, (embed, self.num_heads, self.head_dim), ("embed", "heads", "kv"), 0, (1, 2))), f"{name}_bias",
            ("heads", "kv"))
        query, key, value = project("query"), project("key"), project("value")
        if cache is not None:
            key = jax.lax.dynamic_update_slice(cache[0], key.astype(cache[0].dtype), (0, start, 0, 0))
            value = jax.lax.dynamic_update_slice(cache[1], value.astype(cache[1].dtype), (0, start, 0, 0))
            cache = (key, value)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) / jnp.sqrt(self.head_dim)
        logits = jnp.where(mask[None, None], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(self.dtype))
        out_kernel = self._kernel("out", (self.num_heads, self.head_dim, embed), ("heads", "kv", "embed"), (0, 1), 2)
        return self._plus_bias(jnp.einsum("bqhd,hde->bqe", out, out_kernel), "out_bias", ("embed",)), cache
