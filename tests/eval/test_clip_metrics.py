"""Zero-shot classification and retrieval recall against naive loops."""

import numpy as np
import pytest

from dalle_jax.eval import clip_metrics


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_best_prompt_classes_are_those_of_the_nearest_prompt():
    rng = np.random.default_rng(0)
    images, prompts = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(4, 6, 8)))
    flat = prompts.reshape(24, 8)
    nearest_class = [int(np.argmax([image @ p for p in flat])) // 6 for image in images]
    np.testing.assert_array_equal(clip_metrics.zero_shot_predictions(images, prompts, "best"), nearest_class)


def test_mean_prompt_classes_use_the_renormalised_mean():
    rng = np.random.default_rng(1)
    images, prompts = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(4, 6, 8)))
    centroids = [_unit(np.mean(prompts[c], axis=0)) for c in range(4)]
    expected = [int(np.argmax([image @ c for c in centroids])) for image in images]
    np.testing.assert_array_equal(clip_metrics.zero_shot_predictions(images, prompts, "mean"), expected)
    with pytest.raises(ValueError, match="'max'"):
        clip_metrics.zero_shot_predictions(images, prompts, "max")


def test_averaging_prompts_loses_a_class_that_one_prompt_names():
    # Class 0's two prompts point opposite ways: their mean is zero-ish, but an image on one of them is class 0.
    prompts = np.array([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], [[0.6, 0.8, 0.0], [0.6, 0.0, 0.8]]])
    image = np.array([[1.0, 0.0, 0.0]])
    assert clip_metrics.zero_shot_predictions(image, prompts, "best")[0] == 0
    assert clip_metrics.zero_shot_predictions(image, _unit(prompts + [[[0, 1e-3, 0]]]), "mean")[0] == 1


def test_recall_at_k_counts_matches_ranked_in_the_top_k():
    similarity = np.random.default_rng(2).normal(size=(30, 30))
    ranks = [list(np.argsort(-row)).index(i) for i, row in enumerate(similarity)]
    for k in (1, 5):
        assert clip_metrics.recall_at(similarity, (k,))[f"recall@{k}"] == pytest.approx(np.mean(np.array(ranks) < k))
