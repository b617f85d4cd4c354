"""Drawing tokens from logits: temperature, top-k and nucleus (top-p) filtering."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -1e30


def filter_top_k(logits, k: int):
    """Keeps the `k` largest logits of the last axis (`k = 0`: all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < threshold, _NEG_INF, logits)


def filter_top_p(logits, p):
    """Keeps the smallest set of most likely tokens whose probability reaches `p`."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    keep_sorted = (cumulative - jax.nn.softmax(sorted_logits, axis=-1)) < p  # mass before this token
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)  # back to vocabulary order
    return jnp.where(keep, logits, _NEG_INF)


def sample(key, logits, *, temperature=1.0, top_k: int = 0, top_p=1.0):
    """One token id per row of `logits [..., vocab]`; `temperature = 0` takes the argmax."""
    if isinstance(temperature, (int, float)) and temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_top_k(logits.astype(jnp.float32) / temperature, top_k)
    if not (isinstance(top_p, (int, float)) and top_p >= 1.0):
        logits = filter_top_p(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
