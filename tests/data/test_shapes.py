import chex
import numpy as np
import pytest

from dalle_jax.data import shapes


@pytest.mark.parametrize("image_size", [32, 64])
def test_example_shapes_and_dtypes(image_size):
    example = shapes.make_example(0, "train", 7, image_size=image_size)
    chex.assert_shape(example["image"], (image_size, image_size, 3))
    assert example["image"].dtype == np.uint8
    chex.assert_shape([example["colours"], example["shapes"], example["sizes"]], (shapes.MAX_OBJECTS,))
    chex.assert_shape(example["centres"], (shapes.MAX_OBJECTS, 2))


def test_examples_are_deterministic_and_differ_by_index_and_split():
    a, b = shapes.make_example(3, "train", 11), shapes.make_example(3, "train", 11)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["caption"] == b["caption"] and a["alt_text"] == b["alt_text"]
    assert not np.array_equal(a["image"], shapes.make_example(3, "train", 12)["image"])
    assert not np.array_equal(a["image"], shapes.make_example(3, "validation", 11)["image"])


def test_scene_features_round_trip():
    for index in range(50):
        example = shapes.make_example(0, "validation", index)
        scene = shapes.Scene.from_features(example, 64)
        np.testing.assert_array_equal(shapes.render(scene), example["image"])
        assert scene.describe() == example["prompt"]


def test_objects_are_inside_the_image_and_apart():
    for index in range(200):
        scene = shapes.Scene.from_features(shapes.make_example(1, "train", index), 64)
        for i, a in enumerate(scene.objects):
            r = shapes.object_radius(a.size, 64)
            assert r <= a.centre[0] <= 64 - r and r <= a.centre[1] <= 64 - r
            for b in scene.objects[i + 1:]:
                masks = [shapes.shape_mask(o.shape, shapes.object_radius(o.size, 64), o.centre, 64) for o in (a, b)]
                assert not np.any(masks[0] & masks[1])
        assert len({o.colour for o in scene.objects}) == len(scene.objects)


def test_shape_masks_fill_their_box_as_expected():
    # Fill ratio of each shape's bounding box, from its geometry.
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 1 - (1 - 0.35) ** 2}
    for shape, ratio in expected.items():
        mask = shapes.shape_mask(shape, 40.0, (100.0, 100.0), 200)
        rows, cols = np.nonzero(mask)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert abs(mask.sum() / box - ratio) < 0.03, shape
        assert abs((cols.min() + cols.max() + 1) / 2 - 100) <= 0.5  # centred in its box


def test_held_out_compositions_only_in_test_compositional():
    for split in shapes.SPLITS:
        held = [shapes.Scene.from_features(shapes.make_example(0, split, i), 64).is_held_out() for i in range(300)]
        assert all(held) if split == "test_compositional" else not any(held), split


def test_held_out_relation_matches_either_order():
    (ca, sa), rel, (cb, sb) = shapes.HELD_OUT_RELATIONS[0]
    a, b = shapes.SceneObject(ca, sa, "small", (10, 32)), shapes.SceneObject(cb, sb, "large", (50, 32))
    assert shapes.Scene((a, b), rel).is_held_out()
    assert shapes.Scene((b, a), shapes.INVERSE_RELATION[rel]).is_held_out()
    assert not shapes.Scene((b, a), rel).is_held_out()


def test_descriptive_caption_names_everything_and_alt_text_does_not():
    for index in range(200):
        example = shapes.make_example(0, "train", index)
        scene = shapes.Scene.from_features(example, 64)
        for obj in scene.objects:
            assert obj.phrase() in example["caption"]
        if scene.relation is not None:
            phrases = {shapes.RELATION_PHRASES[scene.relation], shapes.RELATION_PHRASES[shapes.INVERSE_RELATION[scene.relation]]}
            assert any(p in example["caption"] for p in phrases)
        assert sum(obj.phrase() in example["alt_text"] for obj in scene.objects) == 0  # never the size


def test_relations_hold_in_the_geometry():
    for index in range(200):
        scene = shapes.Scene.from_features(shapes.make_example(0, "train", index), 64)
        if scene.relation is not None:
            a, b = scene.objects
            assert shapes.relation_between(a.centre, b.centre) == scene.relation


def test_object_count_distribution_follows_config():
    counts = [int(shapes.make_example(0, "train", i, num_objects_probs=(0.5, 0.5, 0.0))["num_objects"])
              for i in range(400)]
    assert set(counts) == {1, 2}
    assert abs(np.mean(np.array(counts) == 1) - 0.5) < 0.1


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        shapes.make_example(0, "tset", 0)
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        shapes.shape_mask("star", 3.0, (5, 5), 10)
