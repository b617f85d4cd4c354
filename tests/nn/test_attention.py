import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.nn.attention import SelfAttention, init_kv_cache
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


def test_cache_chunks_equal_one_pass():
    block = DecoderBlock(num_heads=2, head_dim=8, mlp_dim=32)
    x = jax.random.normal(jax.random.key(4), (2, 6, 16))
    mask = jnp.asarray(attention_mask("conv", 2, 2, 2, 3))
    params = nn.unbox(block.init(jax.random.key(5), x, mask))
    full, _ = block.apply(params, x, mask)
    cache = init_kv_cache(2, 6, 2, 8)
    first, cache = block.apply(params, x[:, :3], mask[:3], cache=cache, start=0)
    pieces = [first]
    for position in range(3, 6):
        out, cache = block.apply(params, x[:, position: position + 1], mask[position: position + 1], cache=cache,
                                 start=position)
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)


def test_conv_encoder_decoder_shapes():
    images = jnp.zeros((2, 32, 32, 3))
    encoder, decoder = Encoder(channels=(8, 16, 16), out_dim=12), Decoder(channels=(8, 16, 16), out_channels=6)
    z, _ = encoder.init_with_output(jax.random.key(0), images)
    chex.assert_shape(z, (2, 4, 4, 12))
    out, _ = decoder.init_with_output(jax.random.key(1), z)
    chex.assert_shape(out, (2, 32, 32, 6))
