import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from dalle_jax.data import shapes
from dalle_jax.eval import oracle


def _scenes(split, count, image_size=64):
    for index in range(count):
        example = shapes.make_example(0, split, index, image_size=image_size)
        yield example["image"], shapes.Scene.from_features(example, image_size)


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_exact_on_clean_renders(split):
    for image, scene in _scenes(split, 1000):
        found = oracle.parse_image(image)
        truth = sorted(scene.objects, key=lambda o: o.centre)
        assert [(o.colour, o.shape, o.size, o.centre) for o in found] == \
               [(o.colour, o.shape, o.size, o.centre) for o in truth]
        assert oracle.score(image, scene)["all_correct"] == 1.0


def test_exact_at_32_pixels():
    for image, scene in _scenes("validation", 300, image_size=32):
        assert oracle.score(image, scene)["all_correct"] == 1.0


def _degrade(image, rng):
    blurred = ndimage.gaussian_filter(image.astype(np.float32) / 255.0, sigma=(0.7, 0.7, 0))
    noisy = blurred + rng.normal(0.0, 0.05, image.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("split", shapes.SPLITS)
def test_graceful_under_noise_and_blur(split):
    rng = np.random.default_rng(0)
    scores = [oracle.score(_degrade(image, rng), scene)["all_correct"] for image, scene in _scenes(split, 500)]
    assert np.mean(scores) >= 0.95


def test_scores_each_wrong_attribute():
    image, scene = next(s for s in _scenes("train", 100) if s[1].relation is not None)
    a, b = scene.objects
    other_colour = next(c for c in shapes.COLOUR_NAMES if c not in (a.colour, b.colour))
    other_shape = next(s for s in shapes.SHAPES if s != a.shape)
    other_size = next(s for s in shapes.SIZES if s != a.size)
    cases = {
        "colour": dataclasses.replace(scene, objects=(dataclasses.replace(a, colour=other_colour), b)),
        "shape": dataclasses.replace(scene, objects=(dataclasses.replace(a, shape=other_shape), b)),
        "size": dataclasses.replace(scene, objects=(dataclasses.replace(a, size=other_size), b)),
        "relation": dataclasses.replace(scene, relation=shapes.INVERSE_RELATION[scene.relation]),
    }
    for attribute, prompt in cases.items():
        result = oracle.score(image, prompt)
        assert result["all_correct"] == 0.0, attribute
        assert result[attribute] < 1.0, attribute
        assert all(result[k] == 1.0 for k in ("colour", "shape", "size", "relation") if k != attribute), attribute


def test_missing_and_extra_objects_fail_count():
    image, scene = next(s for s in _scenes("train", 100) if len(s[1].objects) == 2)
    single = shapes.Scene(scene.objects[:1], None, 64)
    assert oracle.score(image, single)["count"] == 0.0
    empty = np.full_like(image, shapes.BACKGROUND)
    result = oracle.score(empty, scene)
    assert result["count"] == 0.0 and result["colour"] == 0.0 and result["all_correct"] == 0.0


def test_summarize_groups_by_object_count():
    scores = [{"all_correct": 1.0}, {"all_correct": 0.0}, {"all_correct": 1.0}]
    summary = oracle.summarize(scores, [1, 2, 2])
    assert summary["all"] == {"all_correct": 2 / 3, "n": 3}
    assert summary["1"] == {"all_correct": 1.0, "n": 1}
    assert summary["2"] == {"all_correct": 0.5, "n": 2}


def test_rejects_non_images():
    with pytest.raises(ValueError, match=r"got shape \(4, 5\)"):
        oracle.parse_image(np.zeros((4, 5), np.uint8))


def test_blobs_touching_the_border_are_parsed():
    """Generated images may put colour in a corner; the template search must stay inside."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:10, 0] = (255, 0, 0)  # a 1-px red line on the left edge: its box centre is 0.5
    image[-1, -10:] = (0, 0, 255)  # and a blue one along the bottom
    found = oracle.parse_image(image)
    assert [o.colour for o in found] == ["red", "blue"]
    assert all(0.0 <= o.iou <= 1.0 for o in found)
