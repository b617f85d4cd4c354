import logging
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.nn import attention
from dalle_jax.nn.attention import (SelfAttention, dot_product_attention, init_kv_cache, resolve_implementation,
                                    why_not_cudnn)
from dalle_jax.nn.conv import Decoder, Encoder
from dalle_jax.nn.masks import attention_mask
from dalle_jax.nn.transformer import DecoderBlock


def test_attention_shapes_and_causality():
    layer = SelfAttention(num_heads=2, head_dim=8)
    x = jax.random.normal(jax.random.key(0), (3, 5, 16))
    mask = jnp.tril(jnp.ones((5, 5), bool))
    params = nn.unbox(layer.init(jax.random.key(1), x, mask))
    out, cache = layer.apply(params, x, mask)
    chex.assert_shape(out, (3, 5, 16))
    assert cache is None
    changed, _ = layer.apply(params, x.at[:, 4].set(9.0), mask)
    np.testing.assert_allclose(changed[:, :4], out[:, :4], atol=1e-6)  # the future does not leak back


def test_attention_matches_a_naive_reference():
    layer = SelfAttention(num_heads=2, head_dim=4)
    x = jax.random.normal(jax.random.key(2), (1, 4, 8))
    mask = jnp.asarray(attention_mask("row", 1, 1, 3))
    params = nn.unbox(layer.init(jax.random.key(3), x, mask))
    out, _ = layer.apply(params, x, mask)
    p = {k: np.asarray(v) for k, v in params["params"].items()}
    q, k, v = (np.einsum("le,ehd->lhd", np.asarray(x[0]), p[name]) for name in ("query", "key", "value"))
    expected = np.zeros((4, 2, 4))
    for i in range(4):
        for h in range(2):
            scores = np.array([q[i, h] @ k[j, h] / 2.0 if mask[i, j] else -np.inf for j in range(4)])
            weights = np.exp(scores - scores.max())
            expected[i, h] = (weights / weights.sum()) @ v[:, h]
    np.testing.assert_allclose(out[0], np.einsum("lhd,hde->le", expected, p["out"]), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])  # a conv mask array; plain causal attention (no array)
def test_cache_chunks_equal_one_pass(causal):
    block = DecoderBlock(num_heads=2, head_dim=8, mlp_dim=32, causal=causal)
    x = jax.random.normal(jax.random.key(4), (2, 6, 16))
    mask = None if causal else jnp.asarray(attention_mask("conv", 2, 2, 2, 3))
    rows = (lambda a, b: None) if causal else (lambda a, b: mask[a:b])
    params = nn.unbox(block.init(jax.random.key(5), x, mask))
    full, _ = block.apply(params, x, mask)
    if causal:  # the same as the mask array of DALL·E's dense layers
        dense_mask = jnp.asarray(attention_mask("full", 2, 2, 2))
        np.testing.assert_array_equal(block.clone(causal=False).apply(params, x, dense_mask)[0], full)
    cache = init_kv_cache(2, 6, 2, 8)
    first, cache = block.apply(params, x[:, :3], rows(0, 3), cache=cache, start=0)
    pieces = [first]
    for position in range(3, 6):
        out, cache = block.apply(params, x[:, position: position + 1], rows(position, position + 1), cache=cache,
                                 start=position)
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


def _naive_attention(query, key, value, mask):
    """Loops over batch, head and query in float64: the reference every implementation must match."""
    query, key, value = (np.asarray(a, np.float64) for a in (query, key, value))
    out = np.zeros(query.shape)
    for b in range(query.shape[0]):
        for h in range(query.shape[2]):
            for i in range(query.shape[1]):
                rows = None if mask is None else np.asarray(mask)
                rows = rows[b] if rows is not None and rows.ndim == 3 else rows  # a mask per example
                allowed = np.ones(key.shape[1], bool) if rows is None else rows[i]
                scores = np.where(allowed, key[b, :, h] @ query[b, i, h] / np.sqrt(query.shape[-1]), -np.inf)
                weights = np.exp(scores - scores.max())
                out[b, i, h] = weights / weights.sum() @ value[b, :, h]
    return out


MASKS = {"none": None, **{kind: attention_mask(kind, 3, 3, 3, 3) for kind in ("full", "row", "column", "conv")},
         # per example (Karlo's text padding): example 0 sees keys 0 .. 4, example 1 keys 0 .. 7, from every query
         "per_example": np.broadcast_to(np.arange(12) <= np.array([[4], [7]]), (12, 2, 12)).transpose(1, 0, 2)}


@pytest.mark.parametrize("implementation", ["einsum", "einsum_vjp", "xla", "auto"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_every_implementation_equals_the_naive_reference(implementation, mask_kind, dtype, tolerance):
    query, key, value = jax.random.normal(jax.random.key(6), (3, 2, 12, 4, 8))
    mask = MASKS[mask_kind]
    expected = _naive_attention(*(a.astype(dtype).astype(jnp.float32) for a in (query, key, value)), mask)
    resolved = resolve_implementation(implementation, "einsum", platform=jax.default_backend(), dtype=dtype,
                                      masked=mask is not None, cached=False, head_dim=8)
    out = dot_product_attention(query.astype(dtype), key.astype(dtype), value.astype(dtype),
                                None if mask is None else jnp.asarray(mask), implementation=resolved)
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=tolerance, rtol=tolerance)
    if mask_kind == "full":  # DALL·E's dense layers are plain causal attention
        causal = dot_product_attention(query, key, value, is_causal=True, implementation=resolved)
        np.testing.assert_allclose(causal, _naive_attention(query, key, value, mask), atol=1e-5)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_the_written_backward_equals_autodiff(mask_kind, dtype, tolerance):
    """`einsum_vjp`'s gradients against autodiff of `einsum` computed in float64, for every mask: the row sums
    of its softmax gradient come from the output, and masked logits must pass no gradient on."""
    query, key, value, d_out = jax.random.normal(jax.random.key(7), (4, 2, 12, 4, 8))
    mask = None if MASKS[mask_kind] is None else jnp.asarray(MASKS[mask_kind])
    if mask_kind == "row":  # a row that sees no key at all: its probabilities are uniform and pass no gradient
        mask = mask.at[5].set(False)
    with jax.enable_x64():
        _, vjp = jax.vjp(lambda *qkv: dot_product_attention(*qkv, mask, implementation="einsum"),
                         *(a.astype(jnp.float64) for a in (query, key, value)))
        expected = vjp(d_out.astype(jnp.float64))
    inputs = (a.astype(dtype) for a in (query, key, value))
    out, vjp = jax.vjp(lambda *qkv: dot_product_attention(*qkv, mask, implementation="einsum_vjp"), *inputs)
    grads = vjp(d_out.astype(dtype))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=tolerance, rtol=tolerance)


def test_auto_takes_cudnn_only_where_it_runs_and_says_why_not(caplog):
    gpu = dict(platform="gpu", dtype=jnp.bfloat16, masked=False, cached=False, head_dim=64)
    assert why_not_cudnn(**gpu) is None
    assert resolve_implementation("auto", "einsum", **gpu) == "cudnn"
    for change, reason in [({"platform": "cpu"}, "needs an NVIDIA GPU; this backend is cpu"),
                           ({"dtype": jnp.float32}, "this layer computes in float32"),
                           ({"masked": True}, "this layer has a mask"),
                           ({"cached": True}, "key/value cache"),
                           ({"head_dim": 160}, "at most 128 (it is 160)")]:
        assert reason in why_not_cudnn(**gpu | change)
        attention._log_fallback.cache_clear()  # it logs each reason once
        with caplog.at_level(logging.INFO, logger="dalle_jax.nn.attention"):
            assert resolve_implementation("auto", "xla", **gpu | change) == "xla"
        assert "attention_impl=auto uses xla: " in caplog.records[-1].getMessage()
        assert reason in caplog.records[-1].getMessage()
        with pytest.raises(ValueError, match=f"attention_impl='cudnn' cannot run here: .*{re.escape(reason)}"):
            resolve_implementation("cudnn", "xla", **gpu | change)
    assert resolve_implementation("xla", "einsum", **gpu) == "xla"
    with pytest.raises(ValueError, match="'flash' is not one of"):
        resolve_implementation("flash", "einsum", **gpu)


def test_conv_encoder_decoder_shapes():
    images = jnp.zeros((2, 32, 32, 3))
    encoder, decoder = Encoder(channels=(8, 16, 16), out_dim=12), Decoder(channels=(8, 16, 16), out_channels=6)
    z, _ = encoder.init_with_output(jax.random.key(0), images)
    chex.assert_shape(z, (2, 4, 4, 12))
    out, _ = decoder.init_with_output(jax.random.key(1), z)
    chex.assert_shape(out, (2, 32, 32, 6))
