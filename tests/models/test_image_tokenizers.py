import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from dalle_jax.config import load_config, stage_config
from dalle_jax.models import dvae
from dalle_jax.models.dvae import DiscreteVAE
from dalle_jax.models.vqvae import EMAVectorQuantizer, VQVAE
from dalle_jax.tasks.image_tokenizer import build_image_tokenizer
from tests.conftest import REPO


def _images(batch, size=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3)), jnp.uint8)


def test_vqvae_shapes_and_round_trip_types():
    model = VQVAE(num_codes=16, code_dim=8, channels=(8, 8))
    variables = nn.unbox(model.init({"params": jax.random.key(0)}, _images(2)))
    reconstruction, codes, commitment = model.apply(variables, _images(2))
    chex.assert_shape(reconstruction, (2, 16, 16, 3))
    chex.assert_shape(codes, (2, 4, 4))
    chex.assert_shape(commitment, ())
    images = model.apply(variables, codes, method="decode")
    chex.assert_shape(images, (2, 16, 16, 3))
    assert images.dtype == jnp.uint8
    np.testing.assert_array_equal(model.apply(variables, _images(2), method="encode"), codes)


def test_ema_update_matches_a_naive_reference():
    quantizer = EMAVectorQuantizer(num_codes=4, code_dim=2, decay=0.9, epsilon=1e-5, restart_threshold=0.0)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(10, 2)), jnp.float32)
    variables = nn.unbox(quantizer.init({"params": jax.random.key(0)}, z, train=False))
    (_, codes, _), updated = quantizer.apply(variables, z, train=True, rngs={"restart": jax.random.key(1)},
                                             mutable=["codebook"])
    before, after = variables["codebook"], updated["codebook"]
    size = 0.9 * np.asarray(before["cluster_size"]) + 0.1 * np.bincount(np.asarray(codes), minlength=4)
    embed_sum = 0.9 * np.asarray(before["embed_sum"]) + 0.1 * np.stack(
        [np.asarray(z)[np.asarray(codes) == k].sum(0) for k in range(4)])
    total = size.sum()
    smoothed = (size + 1e-5) / (total + 4e-5) * total
    np.testing.assert_allclose(after["cluster_size"], size, rtol=1e-5)
    np.testing.assert_allclose(after["embedding"], embed_sum / smoothed[:, None], rtol=1e-4, atol=1e-6)
    # each code's nearest-code assignment is by Euclidean distance
    distances = ((np.asarray(z)[:, None] - np.asarray(before["embedding"])[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes, distances.argmin(1))


def test_dead_codes_restart_at_encoder_outputs():
    quantizer = EMAVectorQuantizer(num_codes=4, code_dim=2, decay=0.5, restart_threshold=0.6)
    z = jnp.full((6, 2), 5.0)  # every vector picks the same code; the others starve
    variables = nn.unbox(quantizer.init({"params": jax.random.key(0)}, z, train=False))
    (_, codes, _), updated = quantizer.apply(variables, z, train=True, rngs={"restart": jax.random.key(1)},
                                             mutable=["codebook"])
    used = int(codes[0])
    dead = [k for k in range(4) if k != used]
    np.testing.assert_allclose(updated["codebook"]["embedding"][np.array(dead)], 5.0)
    np.testing.assert_allclose(updated["codebook"]["cluster_size"][np.array(dead)], 1.0)


def test_dvae_shapes_and_gumbel_relaxation():
    model = DiscreteVAE(num_codes=32, code_dim=8, channels=(8, 8))
    variables = nn.unbox(model.init({"params": jax.random.key(0)}, _images(2)))
    output, logits = model.apply(variables, _images(2), temperature=1 / 16, train=True, rngs={"gumbel": jax.random.key(1)})
    chex.assert_shape(output, (2, 16, 16, 6))
    chex.assert_shape(logits, (2, 4, 4, 32))
    codes = model.apply(variables, _images(2), method="encode")
    np.testing.assert_array_equal(codes, jnp.argmax(logits, -1))
    images = model.apply(variables, codes, method="decode")
    assert images.dtype == jnp.uint8 and images.shape == (2, 16, 16, 3)


def test_logit_laplace_matches_the_density():
    images = jnp.asarray([[[[0, 128, 255]]]], jnp.uint8)
    output = jnp.asarray([[[[0.3, -1.0, 2.0, -0.5, 0.2, 0.1]]]])
    nll = np.asarray(dvae.logit_laplace_nll(output, images))[0, 0, 0]
    x = np.array([0, 128, 255]) / 255 * 0.8 + 0.1
    mu, scale = np.array([0.3, -1.0, 2.0]), np.exp([-0.5, 0.2, 0.1])
    # density of x when logit(x) ~ Laplace(mu, b): Laplace pdf times |d logit / dx|
    expected = -(stats.laplace.logpdf(np.log(x / (1 - x)), mu, scale) - np.log(x * (1 - x)))
    np.testing.assert_allclose(nll, expected, rtol=1e-5)


def test_kl_to_uniform_and_schedules():
    logits = jnp.log(jnp.array([[0.7, 0.1, 0.1, 0.1]]))
    q = np.array([0.7, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(dvae.kl_to_uniform(logits), [np.sum(q * np.log(q / 0.25))], rtol=1e-5)
    np.testing.assert_allclose(dvae.kl_to_uniform(jnp.zeros((1, 8))), [0.0], atol=1e-6)
    assert float(dvae.temperature_at(0, 1.0, 1 / 16, 100)) == 1.0
    np.testing.assert_allclose(float(dvae.temperature_at(50, 1.0, 1 / 16, 100)), 0.25, rtol=1e-6)
    np.testing.assert_allclose(float(dvae.temperature_at(1000, 1.0, 1 / 16, 100)), 1 / 16, rtol=1e-6)
    assert float(dvae.kl_weight_at(0, 6.6, 10)) == 0.0
    np.testing.assert_allclose(float(dvae.kl_weight_at(5, 6.6, 10)), 3.3, rtol=1e-6)
    np.testing.assert_allclose(float(dvae.kl_weight_at(99, 6.6, 10)), 6.6, rtol=1e-6)


def test_paper_config_is_valid():
    """256x256 images to a 32x32 grid over 8192 codes (shapes only: nothing is computed)."""
    config = stage_config(load_config(str(REPO / "configs/shapes_dalle.py:paper")), "image_tokenizer")
    model = build_image_tokenizer(config.image_tokenizer)
    images = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.uint8)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros(images.shape, jnp.uint8)))
    codes = jax.eval_shape(lambda v, x: model.apply(v, x, method="encode"), variables, images)
    assert codes.shape == (1, 32, 32)
    assert nn.unbox(variables)["params"]["codebook"].shape == (8192, 256)
