"""The diffusion UNet: shapes, zero output at initialisation, conditioning paths."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.nn.transformer import rematerialized
from dalle_jax.nn.unet import GroupNorm, ResBlock, UNet, group_norm, timestep_embedding


def perturbed(params, seed=0):
    """Parameters moved off their (partly zero) initialisation, so every path matters. The noise
    is NumPy's: a `jax.random` draw per leaf shape would compile one program per shape."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)


def tiny_unet(attention=(4,)):
    return UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=attention,
                num_heads=2, out_channels=3)


def test_timestep_embedding_is_the_sinusoid():
    t = jnp.array([0, 7])
    emb = timestep_embedding(t, 8)
    chex.assert_shape(emb, (2, 8))
    frequencies = np.exp(-np.log(10_000) * np.arange(4) / 4)
    np.testing.assert_allclose(emb[1], np.concatenate([np.cos(7 * frequencies), np.sin(7 * frequencies)]), rtol=1e-5)


def test_shapes_and_zero_output_at_init():
    unet = tiny_unet()
    x, emb, context = jnp.ones((2, 8, 8, 5)), jnp.ones((2, 16)), jnp.ones((2, 3, 12))
    params = unet.init(jax.random.key(0), x, emb, context)["params"]
    out = unet.apply({"params": params}, x, emb, context)
    chex.assert_shape(out, (2, 8, 8, 3))
    assert float(jnp.abs(out).max()) == 0.0  # residual branches and the output start at zero


def test_context_and_embedding_reach_the_output():
    unet = tiny_unet()
    x, emb, context = (jax.random.normal(k, s) for k, s in zip(jax.random.split(jax.random.key(1), 3),
                                                               [(2, 8, 8, 3), (2, 16), (2, 3, 12)]))
    params = perturbed(unet.init(jax.random.key(0), x, emb, context)["params"])
    apply = lambda *args: unet.apply({"params": params}, *args)
    base = apply(x, emb, context)
    assert not np.allclose(base, apply(x, emb + 1.0, context), atol=1e-4)
    assert not np.allclose(base, apply(x, emb, context + 1.0), atol=1e-4)
    # Each example sees only its own context.
    np.testing.assert_allclose(apply(x, emb, context.at[1].add(1.0))[0], base[0], atol=1e-5)


def test_convolution_only_unet_has_no_attention():
    unet = tiny_unet(attention=())
    params = unet.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), jnp.ones((1, 16)))["params"]
    assert not any("AttentionBlock" in name for name in params)


def test_odd_sizes_are_refused():
    unet = UNet(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(), num_heads=1,
                out_channels=3)
    with pytest.raises(ValueError, match="cannot be halved 2 times"):
        unet.init(jax.random.key(0), jnp.ones((1, 6, 6, 3)), jnp.ones((1, 16)))


def test_upsampling_at_low_resolution_commutes_with_the_resize_for_pointwise_kernels():
    x, emb = jax.random.normal(jax.random.key(1), (2, 8, 8, 3)), jnp.ones((2, 16))
    adm, low_res = tiny_unet(attention=()), tiny_unet(attention=()).clone(upsample_at_low_res=True)
    params = perturbed(nn.unbox(adm.init(jax.random.key(0), x, emb)["params"]))
    # The one top-level 16 → 16 convolution is the upsampling one (level 1 → 0).
    (name,) = [k for k, v in params.items() if "kernel" in v and v["kernel"].shape == (3, 3, 16, 16)]
    apply = lambda unet, p: unet.apply({"params": p}, x, emb)
    assert not np.allclose(apply(adm, params), apply(low_res, params), atol=1e-4)
    # With only the centre tap the convolution is pointwise, and a pointwise map commutes with a nearest resize.
    centre = np.zeros((3, 3, 1, 1), np.float32)
    centre[1, 1] = 1.0
    pointwise = {**params, name: {**params[name], "kernel": params[name]["kernel"] * centre}}
    np.testing.assert_allclose(apply(low_res, pointwise), apply(adm, pointwise), atol=1e-5)


@pytest.mark.parametrize("shape,groups,dtype", [((2, 4, 4, 8), 8, jnp.float32), ((2, 4, 4, 16), 8, jnp.float32),
                                                 ((3, 4, 2, 24), 4, jnp.float32), ((2, 4, 4, 16), 4, jnp.bfloat16)])
def test_group_norm_is_flaxs_with_its_gradients(shape, groups, dtype):
    """Groups of 1, 2 and 6 channels on inputs off zero mean: the same parameters, outputs and
    gradients (input, scale, bias) as flax's `nn.GroupNorm`, the reference it replaces."""
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), shape)
    ours, flax_norm = GroupNorm(groups, dtype=dtype), nn.GroupNorm(groups, epsilon=1e-6, dtype=dtype)
    params = ours.init(jax.random.key(1), x)["params"]
    chex.assert_trees_all_equal_shapes_and_dtypes(params, flax_norm.init(jax.random.key(1), x)["params"])
    params = perturbed(params)
    out = ours.apply({"params": params}, x)
    chex.assert_type(out, dtype)
    tolerance = 1e-2 if dtype == jnp.bfloat16 else 2e-5
    chex.assert_trees_all_close(out, flax_norm.apply({"params": params}, x), atol=tolerance, rtol=tolerance)
    cotangent = jax.random.normal(jax.random.key(2), shape)
    loss = lambda norm: lambda p, x: jnp.sum(norm.apply({"params": p}, x).astype(jnp.float32) * cotangent)
    chex.assert_trees_all_close(jax.grad(loss(ours), argnums=(0, 1))(params, x),
                                jax.grad(loss(flax_norm), argnums=(0, 1))(params, x), atol=10 * tolerance,
                                rtol=tolerance)


def test_group_norm_normalises_each_group_and_names_a_bad_split():
    x = 5.0 + 3.0 * jax.random.normal(jax.random.key(0), (2, 8, 8, 12))
    norm = group_norm(12, jnp.float32, groups=3)
    out = norm.apply(norm.init(jax.random.key(0), x), x).reshape(2, 64, 3, 4)
    np.testing.assert_allclose(out.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(1, 3)), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="12 channels cannot be split into 5 groups"):
        GroupNorm(5).init(jax.random.key(0), x)


def test_a_rematerialised_block_gives_the_same_gradients():
    """`UNet(remat=...)` wraps its blocks so (`deterministic`, a Python bool, static): one block, both ways."""
    x, emb = jax.random.normal(jax.random.key(2), (2, 4, 4, 8)), jax.random.normal(jax.random.key(3), (2, 16))
    plain, remat = ResBlock(8), rematerialized(ResBlock, "full", static_argnums=(3,))(8)
    params = perturbed(plain.init(jax.random.key(0), x, emb, True)["params"])
    loss = lambda block: lambda p: jnp.sum(block.apply({"params": p}, x, emb, True) ** 2)
    chex.assert_trees_all_close(jax.grad(loss(remat))(params), jax.grad(loss(plain))(params), atol=1e-5)
