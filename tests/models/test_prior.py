"""unCLIP priors: the diffusion prior's transformer and the autoregressive prior's PCA codes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.models.dalle import DalleTransformer, sample_image_tokens
from dalle_jax.models.prior import DiffusionPrior, PcaBuckets
from dalle_jax.text.tokenizer import EOS_ID
from tests.nn.test_unet import perturbed


def test_diffusion_prior_shapes_and_inputs():
    prior = DiffusionPrior(vocab_size=20, caption_length=5, width=16, depth=2, num_heads=2, head_dim=8, mlp_dim=32)
    keys = jax.random.split(jax.random.key(0), 2)
    z, text = jax.random.normal(keys[0], (3, 12)), jax.random.normal(keys[1], (3, 12))
    t, caption = jnp.array([0, 10, 999]), jnp.array([[4, 5, EOS_ID, 0, 0]] * 3)
    params = perturbed(prior.init(jax.random.key(1), z, t, text, caption)["params"])
    apply = lambda *args: prior.apply({"params": params}, *args)
    out = apply(z, t, text, caption)
    chex.assert_shape(out, (3, 12))
    for changed in ((z + 1, t, text, caption), (z, t + 7, text, caption), (z, t, text + 1, caption),
                    (z, t, text, caption.at[:, 0].set(9))):
        assert not np.allclose(out, apply(*changed), atol=1e-5)


def low_rank_data(n=4000, dim=16, rank=5, seed=0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T  # orthonormal rows
    return rng.normal(size=(n, rank)) * np.array([5, 4, 3, 2, 1]) @ basis + 1.5 + 1e-3 * rng.normal(size=(n, dim))


def test_pca_keeps_the_components_that_hold_the_variance():
    data = low_rank_data()
    pca = PcaBuckets.fit(data, variance=0.99, num_buckets=64)
    assert pca.num_components == 5 and pca.explained_variance >= 0.99
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(5), atol=1e-5)
    fewer = PcaBuckets.fit(data, variance=0.8, num_buckets=64)  # 25+16+9 of 55 = 0.91 ≥ 0.8 > 0.74
    assert fewer.num_components == 3


def test_buckets_have_equal_mass_and_decode_close():
    data = low_rank_data()
    pca = PcaBuckets.fit(data, variance=0.99, num_buckets=64)
    codes = pca.encode(data)
    chex.assert_shape(codes, (4000, 5))
    assert codes.min() >= 0 and codes.max() < 64
    counts = np.stack([np.bincount(codes[:, k], minlength=64) for k in range(5)])
    assert counts.min() >= 4000 / 64 * 0.8 and counts.max() <= 4000 / 64 * 1.2
    decoded = pca.decode(codes)
    error = np.linalg.norm(decoded - data, axis=1).mean() / np.linalg.norm(data - data.mean(0), axis=1).mean()
    assert error < 0.1
    np.testing.assert_allclose(np.asarray(pca.decode(jnp.asarray(codes))), decoded, rtol=1e-5, atol=1e-5)


def test_pca_save_and_load(tmp_path):
    pca = PcaBuckets.fit(low_rank_data(n=500), num_buckets=8)
    pca.save(tmp_path / "pca.npz")
    loaded = PcaBuckets.load(tmp_path / "pca.npz")
    chex.assert_trees_all_close(loaded.centres, pca.centres)
    assert loaded.explained_variance == pca.explained_variance


def test_text_condition_enters_at_the_text_positions_and_cached_sampling_agrees():
    model = DalleTransformer(text_vocab_size=12, image_vocab_size=10, text_length=4, grid_size=(1, 6), embed_dim=16,
                             depth=2, num_heads=2, head_dim=8, mlp_dim=32, attention_kinds=("full", "full"),
                             text_condition=True)
    text = jnp.array([[5, 6, EOS_ID, 0], [7, EOS_ID, 0, 0]])
    condition = jax.random.normal(jax.random.key(0), (2, 3))
    params = model.init(jax.random.key(1), jnp.zeros((2, 9), jnp.int32), condition=condition)["params"]
    hidden = model.apply({"params": params}, text, condition=condition)
    assert not np.allclose(hidden, model.apply({"params": params}, text, condition=condition + 1), atol=1e-5)
    draw = lambda use_cache: sample_image_tokens(model, params, text, jax.random.key(2), use_cache=use_cache,
                                                 empty_text=jnp.array([EOS_ID, 0, 0, 0]), guidance_scale=2.0,
                                                 condition=condition, return_logits=True)
    (cached, cached_logits), (uncached, uncached_logits) = draw(True), draw(False)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_allclose(cached_logits, uncached_logits, atol=1e-4)
