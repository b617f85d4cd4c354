import numpy as np

from dalle_jax.data import shapes
from dalle_jax.eval import captions


def _scenes(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [shapes.sample_scene(rng, 64) for _ in range(n)]


def test_parse_reads_objects_and_relation():
    mentions, relation = captions.parse_caption("there is a small red circle to the left of a large blue square")
    assert mentions == [{"size": "small", "colour": "red", "shape": "circle"},
                        {"size": "large", "colour": "blue", "shape": "square"}]
    assert relation == "left"
    assert captions.parse_caption("something red") == ([{"colour": "red"}], None)
    assert captions.parse_caption("abstract art") == ([], None)


def test_true_descriptive_captions_score_perfectly():
    scenes = _scenes()
    rng = np.random.default_rng(1)
    texts = [shapes.descriptive_caption(scene, rng) for scene in scenes]  # every phrasing and order
    quality = captions.caption_quality(texts, scenes)
    for name in captions.FACTS:
        assert quality[name]["precision"] == 1.0 and quality[name]["recall"] == 1.0, (name, quality[name])
    assert quality["relation"]["true"] == sum(s.relation is not None for s in scenes)


def test_alt_text_and_short_captions_are_true_but_incomplete():
    scenes = _scenes()
    rng = np.random.default_rng(2)
    for texts in ([shapes.alt_text_caption(s, rng) for s in scenes], [shapes.short_caption(s) for s in scenes]):
        quality = captions.caption_quality(texts, scenes)
        assert quality["all"]["precision"] == 1.0
        assert quality["all"]["recall"] < 0.7
        assert quality["relation"]["stated"] == 0


def test_short_caption_names_the_largest_object():
    small = shapes.SceneObject("red", "circle", "small")
    large = shapes.SceneObject("blue", "square", "large")
    assert shapes.short_caption(shapes.Scene((small, large))) == "a large blue square"
    assert shapes.short_caption(shapes.Scene((small,))) == "a small red circle"


def test_wrong_facts_lower_precision_by_their_share():
    scene = shapes.Scene((shapes.SceneObject("red", "circle", "small", (10, 30)),
                          shapes.SceneObject("blue", "square", "large", (40, 30))), relation="left")
    # One wrong colour: colour 1/2 right, that object wrong, the relation names a wrong pair.
    quality = captions.caption_quality(["a small green circle to the left of a large blue square"], [scene])
    assert quality["colour"]["precision"] == 0.5 and quality["shape"]["precision"] == 1.0
    assert quality["object"]["recall"] == 0.5 and quality["relation"]["recall"] == 0.0
    # The inverse phrasing states the same relation.
    quality = captions.caption_quality(["a large blue square to the right of a small red circle"], [scene])
    assert quality["all"]["precision"] == 1.0 and quality["all"]["recall"] == 1.0
