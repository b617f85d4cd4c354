"""unCLIP's embedding manipulations: slerp and text diffs."""

import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax.pipelines.unclip import slerp, text_diff_embeddings


def unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_slerp_endpoints_norms_and_constant_speed():
    a, b = unit(jax.random.normal(jax.random.key(0), (2, 8)))
    fractions = jnp.linspace(0, 1, 5)[:, None]
    path = slerp(a[None], b[None], fractions)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, atol=1e-5)
    angles = np.arccos(np.clip(np.asarray(path @ a), -1, 1))  # the angle from `a` grows linearly
    np.testing.assert_allclose(angles, angles[-1] * np.linspace(0, 1, 5), atol=1e-3)  # arccos near 1: float32


def test_slerp_of_parallel_vectors_is_that_vector():
    a = unit(jnp.arange(1.0, 5.0))
    np.testing.assert_allclose(slerp(a, a, 0.3), a, atol=1e-6)


def test_text_diff_rotates_towards_the_difference():
    image, before, after = unit(jax.random.normal(jax.random.key(1), (3, 8)))
    path = text_diff_embeddings(image, before, after, [0.0, 0.25, 0.5])
    np.testing.assert_allclose(path[0], image, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, atol=1e-5)
    direction = unit(after - before)
    assert float(path[1] @ direction) > float(path[0] @ direction)
    assert float(path[2] @ direction) > float(path[1] @ direction)
