import numpy as np
import pytest

from dalle_jax.eval import rerank


def _embedders():
    """Images embed by their mean pixel (3 channels, normalised); texts name a direction."""
    def embed_images(images):
        v = images.reshape(len(images), -1, 3).mean(axis=1).astype(np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    directions = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0]}
    return embed_images, lambda prompts: np.array([directions[p] for p in prompts])


def test_keeps_the_most_similar_candidates_best_first():
    rng = np.random.default_rng(0)
    candidates = rng.integers(1, 256, (2, 6, 4, 4, 3)).astype(np.uint8)
    embed_images, embed_text = _embedders()
    kept, similarity = rerank.rerank(candidates, ["red", "green"], embed_images, embed_text, keep=3)
    assert kept.shape == (2, 3, 4, 4, 3) and similarity.shape == (2, 3)
    for p, prompt in enumerate(["red", "green"]):
        all_sims = embed_images(candidates[p]) @ embed_text([prompt])[0]
        expected = np.argsort(-all_sims)[:3]
        np.testing.assert_allclose(similarity[p], all_sims[expected])
        np.testing.assert_array_equal(kept[p], candidates[p][expected])
    assert np.all(np.diff(similarity, axis=1) <= 0)
    with pytest.raises(ValueError, match="keep must be between 1 and the 6 candidates"):
        rerank.rerank(candidates, ["red", "green"], embed_images, embed_text, keep=7)


def test_clip_score_is_a_clipped_cosine():
    embed_images, embed_text = _embedders()
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[0, ..., 0] = 200  # pure red
    images[1, ..., 1] = 200  # pure green
    np.testing.assert_allclose(rerank.clip_scores(images, ["red", "red"], embed_images, embed_text), [100.0, 0.0])
