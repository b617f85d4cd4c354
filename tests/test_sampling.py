import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax import sampling


def test_top_k_keeps_the_k_largest():
    logits = jnp.array([[0.1, 3.0, -1.0, 2.0, 0.5]])
    kept = np.asarray(sampling.filter_top_k(logits, 2)) > -1e29
    np.testing.assert_array_equal(kept, [[False, True, False, True, False]])
    np.testing.assert_array_equal(sampling.filter_top_k(logits, 0), logits)


def test_top_p_keeps_the_nucleus():
    probs = np.array([0.05, 0.5, 0.1, 0.3, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None]
    for p in (0.4, 0.75, 0.85, 0.95, 1.0):
        # naive: add tokens by decreasing probability until the mass reaches p
        order, mass, expected = np.argsort(-probs), 0.0, np.zeros(5, bool)
        for i in order:
            if mass >= p:
                break
            expected[i], mass = True, mass + probs[i]
        kept = np.asarray(sampling.filter_top_p(logits, p))[0] > -1e29
        np.testing.assert_array_equal(kept, expected, err_msg=f"p={p}")


def test_samples_follow_the_filtered_distribution():
    logits = jnp.log(jnp.array([0.1, 0.6, 0.3]))
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = jax.vmap(lambda k: sampling.sample(k, logits, top_k=2))(keys)
    freq = np.bincount(np.asarray(draws), minlength=3) / len(keys)
    np.testing.assert_allclose(freq, [0.0, 2 / 3, 1 / 3], atol=0.03)
    assert int(sampling.sample(keys[0], logits, temperature=0)) == 1
