"""Masked multi-head self-attention with an optional key/value cache, and the choice of the
kernel that computes it (`attention_impl`)."""

from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KVCache = tuple[jax.Array, jax.Array]  # keys, values: [batch, cache_length, heads, head_dim]
log = logging.getLogger(__name__)

# How attention is computed (`model.attention_impl`):
# - `einsum`: two einsums and a float32 softmax written here (the DALL·E / CLIP / captioner figures so far);
# - `einsum_vjp`: the same forward pass with a backward pass written here (`_einsum_attention_backward`), whose
#   softmax gradient sums over the head width where autodiff's sums over the keys (the UNets' default);
# - `xla`: `jax.nn.dot_product_attention`'s XLA path (the same algebra, scaled before the mask);
# - `cudnn`: cuDNN's fused flash attention through `jax.nn.dot_product_attention`: a GPU, bfloat16 or
#   float16, plain causal attention (or none) and no cache; anything else is an error;
# - `auto`: `cudnn` where it applies, otherwise the layer's own default (its `fallback`), logging why once.
ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "einsum_vjp", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
ATTENTION_FALLBACK = "einsum"  # what `attention_impl="auto"` runs in `SelfAttention` where cuDNN cannot


def why_not_cudnn(*, platform: str, dtype, masked: bool, cached: bool, head_dim: int) -> str | None:
    """Why cuDNN's fused attention cannot run this layer, or None if it can."""
    if platform not in ("gpu", "cuda"):
        return f"cuDNN attention needs an NVIDIA GPU; this backend is {platform}"
    if jnp.dtype(dtype) not in _CUDNN_DTYPES:
        return f"cuDNN attention runs in bfloat16 or float16; this layer computes in {jnp.dtype(dtype).name}"
    if masked:
        return ("cuDNN attention runs plain causal attention or none; this layer has a mask (DALL·E's row, column "
                "or convolutional layers, the captioner's prefix)")
    if cached:
        return "sampling against a key/value cache runs one position at a time"
    if head_dim % 8 or head_dim > 128:
        return f"cuDNN attention needs a head size that is a multiple of 8, at most 128 (it is {head_dim})"
    return None


@functools.lru_cache(maxsize=None)
def _log_fallback(fallback: str, reason: str) -> None:
    log.info("attention_impl=auto uses %s: %s", fallback, reason)


def resolve_implementation(requested: str, fallback: str, *, platform: str | None = None, **conditions) -> str:
    """The implementation that runs: `requested`, or for `auto` cuDNN where `why_not_cudnn(**conditions)`
    finds nothing against it on `platform` (JAX's default backend unless given) and `fallback` elsewhere.
    Raises for an unknown name, or for `cudnn` where it cannot run."""
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention_impl {requested!r} is not one of {ATTENTION_IMPLEMENTATIONS}")
    if requested not in ("auto", "cudnn"):
        return requested
    reason = why_not_cudnn(platform=platform or jax.default_backend(), **conditions)
    if reason is None:
        return "cudnn"
    if requested == "cudnn":
        raise ValueError(f"attention_impl='cudnn' cannot run here: {reason}")
    _log_fallback(fallback, reason)
    return fallback


def causal_mask(query_length: int, key_length: int, start=0) -> jax.Array:
    """`bool [query_length, key_length]`: the query at position `start + i` sees keys `0 .. start + i`."""
    return jnp.arange(key_length)[None, :] <= start + jnp.arange(query_length)[:, None]


def dot_product_attention(query, key, value, mask=None, *, is_causal: bool = False,
                          implementation: str = "einsum") -> jax.Array:
    """`softmax(q·kᵀ / √d) · v` for `[batch, length, heads, head_dim]` queries, keys and values (one dtype),
    over the keys that `mask` (`bool [query_length, key_length]`, per example `[batch, query_length,
    key_length]`, or None for all) allows, and with `is_causal` only keys `0 .. i` for query `i`. The
    logits and softmax are float32."""
    if implementation == "cudnn":
        if mask is not None:
            raise ValueError("cuDNN attention takes no mask array here: plain causal attention or none")
        return jax.nn.dot_product_attention(query, key, value, is_causal=is_causal, implementation="cudnn")
    if is_causal:
        causal = causal_mask(query.shape[1], key.shape[1])
        mask = causal if mask is None else mask & causal
    if mask is not None:
        mask = mask[:, None] if mask.ndim == 3 else mask[None, None]  # [batch or 1, heads (1), queries, keys]
    if implementation == "xla":
        return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")
    if implementation == "einsum_vjp":
        return _einsum_attention_with_vjp(query, key, value, mask)
    return _einsum_attention(query, key, value, mask)[0]


def _einsum_attention(query, key, value, mask):
    """(the attention's output, its float32 probabilities `[batch, heads, queries, keys]`); `mask` is None
    or broadcasts against the probabilities."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits / np.sqrt(query.shape[-1]).astype(np.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value), weights


@jax.custom_vjp
def _einsum_attention_with_vjp(query, key, value, mask):
    return _einsum_attention(query, key, value, mask)[0]


def _einsum_attention_forward(query, key, value, mask):
    out, weights = _einsum_attention(query, key, value, mask)
    return out, (query, key, value, mask, weights, out)


def _einsum_attention_backward(residuals, d_out):
    """The gradients of `_einsum_attention`'s output with respect to the query, key and value. The softmax's
    gradient `P ⊙ (dP − rowsum(dP ⊙ P))` takes its row sums as `rowsum(dO ⊙ O)`, the same numbers since
    `O = P · V` (FlashAttention-2, Dao 2023, section 3.1.2): summed over the head width, where autodiff of the
    softmax sums its `[batch, heads, queries, keys]` gradient over the keys."""
    query, key, value, mask, weights, out = residuals
    d_value = jnp.einsum("bhqk,bqhd->bkhd", weights.astype(value.dtype), d_out)
    d_weights = jnp.einsum("bqhd,bkhd->bhqk", d_out, value, preferred_element_type=jnp.float32)
    row_sums = jnp.einsum("bqhd,bqhd->bhq", d_out, out, preferred_element_type=jnp.float32)
    d_logits = weights * (d_weights - row_sums[..., None])
    if mask is not None:
        d_logits = jnp.where(mask, d_logits, 0.0)
    d_logits = (d_logits / np.sqrt(query.shape[-1]).astype(np.float32)).astype(query.dtype)
    d_query = jnp.einsum("bhqk,bkhd->bqhd", d_logits, key)
    d_key = jnp.einsum("bhqk,bqhd->bkhd", d_logits, query)
    return d_query, d_key, d_value, None


_einsum_attention_with_vjp.defvjp(_einsum_attention_forward, _einsum_attention_backward)


def dense_init(names):
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def init_kv_cache(batch: int, length: int, num_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
    zeros = jnp.zeros((batch, length, num_heads, head_dim), dtype)
    return zeros, zeros


class SelfAttention(nn.Module):
    """Self-attention of `x [batch, length, embed]`: with `causal`, position `i` attends to positions
    `0 .. i`; a boolean `mask` restricts it further (or alone, without `causal`).

    Without a cache, `mask` is `[length, length]` (or `[batch, length, length]`). With one, `x` holds the positions
    `start .. start + length - 1`, their keys and values are written into the cache, and
    `mask` is `[length, cache_length]`: the rows of those positions. Plain causal attention
    (`causal` and no mask) is what cuDNN's fused kernel runs (`attention_impl`).
    """

    num_heads: int
    head_dim: int
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = False  # biases on the query, key, value and output projections (OpenAI CLIP has them)
    causal: bool = False
    attention_impl: str = "auto"  # one of ATTENTION_IMPLEMENTATIONS; `auto` falls back to ATTENTION_FALLBACK

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
    def __call__(self, x, mask=None, *, cache: KVCache | None = None, start=0):
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
        implementation = resolve_implementation(self.attention_impl, ATTENTION_FALLBACK, dtype=self.dtype,
                                                masked=mask is not None, cached=cache is not None,
                                                head_dim=self.head_dim)
        is_causal = self.causal
        if cache is not None and is_causal:  # the rows of the cached positions `start ..`
            causal = causal_mask(query.shape[1], key.shape[1], start)
            mask, is_causal = causal if mask is None else mask & causal, False
        out = dot_product_attention(query, key.astype(self.dtype), value.astype(self.dtype), mask,
                                    is_causal=is_causal, implementation=implementation)
        out_kernel = self._kernel("out", (self.num_heads, self.head_dim, embed), ("heads", "kv", "embed"), (0, 1), 2)
        return self._plus_bias(jnp.einsum("bqhd,hde->bqe", out, out_kernel), "out_bias", ("embed",)), cache
