"""The procedural shapes data set: scenes, their renders, and their captions.

A scene holds 1-3 non-overlapping objects on a plain dark background. Each object has
one of 8 colours, 4 shapes and 2 sizes; two-object scenes also carry a spatial relation.
Every example is a pure function of `(seed, split, index)`, so any example can be
rebuilt on any host, and the exact ground truth travels with it.

Each example carries two captions, because the DALL·E 3 experiment needs both:
- a *descriptive* caption naming every object, colour, size and the relation;
- an *alt-text* caption that is deficient the way scraped captions are (one object, or a
  vague phrase such as "some shapes").

Some compositions (`HELD_OUT_PAIRS`, `HELD_OUT_RELATIONS`) never occur in `train` or
`validation`; the `test_compositional` split is made only of scenes that contain one.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 150, 30),
    "yellow": (235, 225, 50),
    "green": (50, 180, 70),
    "cyan": (40, 210, 220),
    "blue": (50, 80, 230),
    "purple": (160, 60, 200),
    "white": (240, 240, 240),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
BACKGROUND: tuple[int, int, int] = (20, 20, 20)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "large")
# Object half-extent as a fraction of the image side, by size.
SIZE_RADIUS: dict[str, float] = {"small": 0.1, "large": 0.17}
# `RELATIONS[r]` reads "object 0 is <r> object 1".
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
RELATION_PHRASES: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
INVERSE_RELATION: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
MAX_OBJECTS = 3
SPLITS: tuple[str, ...] = ("train", "validation", "test_compositional")

# Compositions never seen in training: colour+shape pairs, and (object, relation, object)
# triples over colour+shape (either size, either phrasing order).
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("blue", "circle"),
    ("yellow", "cross"),
    ("white", "square"),
)
HELD_OUT_RELATIONS: tuple[tuple[tuple[str, str], str, tuple[str, str]], ...] = (
    (("green", "circle"), "left", ("purple", "square")),
    (("orange", "square"), "above", ("cyan", "triangle")),
    (("purple", "cross"), "right", ("yellow", "circle")),
)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: names from `COLOUR_NAMES`, `SHAPES`, `SIZES`; centre in pixels (x, y)."""

    colour: str
    shape: str
    size: str
    centre: tuple[float, float] = (0.0, 0.0)

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """A whole scene: its objects and, for two objects, `objects[0] <relation> objects[1]`."""

    objects: tuple[SceneObject, ...]
    relation: str | None = None
    image_size: int = 64

    def __post_init__(self):
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        if self.relation is not None and (len(self.objects) != 2 or self.relation not in RELATIONS):
            raise ValueError(f"relation {self.relation!r} needs two objects and one of {RELATIONS}")

    def describe(self) -> str:
        """The canonical descriptive caption (used as the evaluation prompt)."""
        return descriptive_caption(self, np.random.default_rng(0), canonical=True)

    def is_held_out(self) -> bool:
        """True when the scene contains a composition reserved for `test_compositional`."""
        if any((o.colour, o.shape) in HELD_OUT_PAIRS for o in self.objects):
            return True
        if self.relation is None:
            return False
        a, b = ((o.colour, o.shape) for o in self.objects)
        for held_a, held_rel, held_b in HELD_OUT_RELATIONS:
            if (a, self.relation, b) == (held_a, held_rel, held_b):
                return True
            if (b, INVERSE_RELATION[self.relation], a) == (held_a, held_rel, held_b):
                return True
        return False

    def to_features(self) -> dict[str, np.ndarray]:
        """Fixed-shape integer features (`-1` pads missing objects / no relation)."""
        pad = MAX_OBJECTS - len(self.objects)
        ids = lambda names, values: np.array([names.index(v) for v in values] + [-1] * pad, np.int32)
        centres = [o.centre for o in self.objects] + [(-1.0, -1.0)] * pad
        return {
            "num_objects": np.int32(len(self.objects)),
            "colours": ids(COLOUR_NAMES, [o.colour for o in self.objects]),
            "shapes": ids(SHAPES, [o.shape for o in self.objects]),
            "sizes": ids(SIZES, [o.size for o in self.objects]),
            "centres": np.array(centres, np.float32),
            "relation": np.int32(-1 if self.relation is None else RELATIONS.index(self.relation)),
        }

    @classmethod
    def from_features(cls, features: dict[str, np.ndarray], image_size: int) -> Scene:
        """Inverse of `to_features`."""
        n = int(features["num_objects"])
        objects = tuple(
            SceneObject(
                COLOUR_NAMES[int(features["colours"][i])],
                SHAPES[int(features["shapes"][i])],
                SIZES[int(features["sizes"][i])],
                tuple(float(c) for c in features["centres"][i]),
            )
            for i in range(n)
        )
        rel = int(features["relation"])
        return cls(objects, None if rel < 0 else RELATIONS[rel], image_size)


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def object_radius(size: str, image_size: int) -> float:
    return SIZE_RADIUS[size] * image_size


def shape_mask(shape: str, radius: float, centre: tuple[float, float], image_size: int) -> np.ndarray:
    """Boolean `[image_size, image_size]` mask of one shape, centred in its bounding box.

    Pixels are sampled at their centres; every shape lies within `centre ± radius`.
    """
    coords = np.arange(image_size) + 0.5
    dx = coords[None, :] - centre[0]
    dy = coords[:, None] - centre[1]
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        half = 0.8 * radius
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up, base at the bottom
        half_height = 0.9 * radius
        rise = (dy + half_height) / (2 * half_height)  # 0 at the apex, 1 at the base
        return (rise >= 0) & (rise <= 1) & (np.abs(dx) <= radius * rise)
    if shape == "cross":
        arm = 0.35 * radius
        horizontal = (np.abs(dx) <= radius) & (np.abs(dy) <= arm)
        vertical = (np.abs(dy) <= radius) & (np.abs(dx) <= arm)
        return horizontal | vertical
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(scene: Scene) -> np.ndarray:
    """Renders a scene to a `uint8 [size, size, 3]` RGB image."""
    size = scene.image_size
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        mask = shape_mask(obj.shape, object_radius(obj.size, size), obj.centre, size)
        image[mask] = COLOURS[obj.colour]
    return image


# ---------------------------------------------------------------------------------------
# Sampling scenes
# ---------------------------------------------------------------------------------------


def _gap(image_size: int) -> float:
    return 0.06 * image_size


def _boxes_apart(a: SceneObject, b: SceneObject, image_size: int) -> bool:
    reach = object_radius(a.size, image_size) + object_radius(b.size, image_size) + _gap(image_size)
    return abs(a.centre[0] - b.centre[0]) >= reach or abs(a.centre[1] - b.centre[1]) >= reach


def _relation_holds(a: SceneObject, b: SceneObject, relation: str) -> bool:
    """`a <relation> b`, with the displacement at least twice as long on its own axis."""
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    if relation in ("left", "right"):
        along, across = (dx if relation == "left" else -dx), dy
    else:
        along, across = (dy if relation == "above" else -dy), dx
    return along > 0 and along >= 2 * abs(across)


def relation_between(a_centre: Sequence[float], b_centre: Sequence[float]) -> str:
    """The relation `a <r> b` along the dominant axis of the displacement."""
    dx, dy = b_centre[0] - a_centre[0], b_centre[1] - a_centre[1]
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def _place(rng: np.random.Generator, kinds: Sequence[tuple[str, str, str]], relation: str | None,
           image_size: int, max_tries: int = 200) -> tuple[SceneObject, ...] | None:
    """Draws integer centres for objects of the given (colour, shape, size), or None."""
    for _ in range(max_tries):
        objects = []
        for colour, shape, size in kinds:
            margin = int(np.ceil(object_radius(size, image_size))) + 1
            centre = tuple(float(v) for v in rng.integers(margin, image_size - margin + 1, size=2))
            objects.append(SceneObject(colour, shape, size, centre))
        apart = all(_boxes_apart(a, b, image_size) for i, a in enumerate(objects) for b in objects[i + 1:])
        if apart and (relation is None or _relation_holds(objects[0], objects[1], relation)):
            return tuple(objects)
    return None


def _random_kinds(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    colours = rng.choice(len(COLOUR_NAMES), size=n, replace=False)  # distinct colours per scene
    return [(COLOUR_NAMES[c], SHAPES[rng.integers(len(SHAPES))], SIZES[rng.integers(len(SIZES))])
            for c in colours]


def sample_scene(rng: np.random.Generator, image_size: int = 64,
                 num_objects_probs: Sequence[float] = (0.4, 0.4, 0.2),
                 held_out: bool = False) -> Scene:
    """Draws a scene; `held_out=True` draws one containing a held-out composition, else none."""
    while True:
        if held_out:
            scene = _sample_held_out(rng, image_size, num_objects_probs)
        else:
            n = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=num_objects_probs))
            relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 else None
            objects = _place(rng, _random_kinds(rng, n), relation, image_size)
            scene = None if objects is None else Scene(objects, relation, image_size)
        if scene is not None and scene.is_held_out() == held_out:
            return scene


def _sample_held_out(rng, image_size, num_objects_probs) -> Scene | None:
    if rng.random() < 0.5:  # a held-out colour+shape pair among random objects
        n = int(rng.choice(np.arange(1, MAX_OBJECTS + 1), p=num_objects_probs))
        kinds = _random_kinds(rng, n)
        colour, shape = HELD_OUT_PAIRS[rng.integers(len(HELD_OUT_PAIRS))]
        if colour in [k[0] for k in kinds]:
            return None  # keep colours distinct
        kinds[rng.integers(n)] = (colour, shape, SIZES[rng.integers(len(SIZES))])
        relation = RELATIONS[rng.integers(len(RELATIONS))] if n == 2 else None
    else:  # a held-out (object, relation, object) triple
        (ca, sa), relation, (cb, sb) = HELD_OUT_RELATIONS[rng.integers(len(HELD_OUT_RELATIONS))]
        kinds = [(ca, sa, SIZES[rng.integers(2)]), (cb, sb, SIZES[rng.integers(2)])]
    objects = _place(rng, kinds, relation, image_size)
    return None if objects is None else Scene(objects, relation, image_size)


# ---------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------

_ONE_OBJECT = ("a {0}", "a {0} on a dark background", "an image of a {0}", "there is a {0} in the picture")
_TWO_OBJECTS = ("a {0} {rel} a {1}", "there is a {0} {rel} a {1}", "a picture of a {0} {rel} a {1}")
_THREE_OBJECTS = ("a {0}, a {1} and a {2}", "three shapes: a {0}, a {1} and a {2}")
_VAGUE = ("some shapes", "an image", "shapes on a dark background", "a simple drawing", "abstract art",
          "geometric shapes", "a picture")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def descriptive_caption(scene: Scene, rng: np.random.Generator, canonical: bool = False) -> str:
    """Names every object with colour and size, and the relation; `canonical` fixes the phrasing."""
    objs = list(scene.objects)
    pick = (lambda options: options[0]) if canonical else (lambda options: options[rng.integers(len(options))])
    if len(objs) == 1:
        return pick(_ONE_OBJECT).format(objs[0].phrase())
    if len(objs) == 2:
        relation = scene.relation or relation_between(objs[0].centre, objs[1].centre)
        if not canonical and rng.random() < 0.5:  # say it the other way round
            objs, relation = objs[::-1], INVERSE_RELATION[relation]
        return pick(_TWO_OBJECTS).format(*(o.phrase() for o in objs), rel=RELATION_PHRASES[relation])
    order = sorted(objs, key=lambda o: o.centre) if canonical else [objs[i] for i in rng.permutation(len(objs))]
    return pick(_THREE_OBJECTS).format(*(o.phrase() for o in order))


def short_caption(scene: Scene) -> str:
    """The main subject only (DALL·E 3's short synthetic caption): the largest object, the
    first of equals, with its size, colour and shape."""
    main = max(scene.objects, key=lambda o: SIZES.index(o.size))  # max keeps the first of equals
    return f"a {main.phrase()}"


def alt_text_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A deficient caption: one object only (often without size), or a vague phrase."""
    obj = scene.objects[rng.integers(len(scene.objects))]
    options = (
        f"{_article(obj.colour)} {obj.colour} {obj.shape}",
        f"a {obj.shape}",
        f"something {obj.colour}",
        f"{_article(obj.colour)} {obj.colour} {obj.shape} and more" if len(scene.objects) > 1 else f"a {obj.shape}",
        _VAGUE[rng.integers(len(_VAGUE))],
    )
    return options[rng.choice(len(options), p=(0.3, 0.15, 0.1, 0.1, 0.35))]


# ---------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator behind one example: independent per (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return np.random.default_rng((seed, SPLITS.index(split), index))


def make_example(seed: int, split: str, index: int, image_size: int = 64,
                 num_objects_probs: Sequence[float] = (0.4, 0.4, 0.2)) -> dict:
    """One example of a split: image, both captions, and the scene's ground truth."""
    rng = example_rng(seed, split, index)
    scene = sample_scene(rng, image_size, num_objects_probs, held_out=split == "test_compositional")
    return {
        "index": np.int64(index),
        "image": render(scene),
        "caption": descriptive_caption(scene, rng),
        "alt_text": alt_text_caption(scene, rng),
        "prompt": scene.describe(),
        **scene.to_features(),
    }
