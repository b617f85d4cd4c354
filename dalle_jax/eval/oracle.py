"""An exact, learning-free judge of shapes images.

`parse_image` turns an image back into objects (colour, shape, size, centre);
`score` compares those objects with a prompt's scene, per attribute and all-correct.

How an image is parsed:
1. Each pixel `p` is explained as a blend `background + alpha * (colour - background)` of
   the background and its best-fitting palette colour; it is foreground when `alpha > 1/2`.
   Blur therefore splits an edge at its midpoint and noise has to move a pixel halfway
   to another colour before it counts.
2. Foreground pixels form 8-connected components (objects are drawn apart, so one
   component is one object); specks much smaller than the smallest shape are dropped.
3. A component's colour is the majority of its pixels' colours; its shape and size are
   the template (rendered with `shapes.shape_mask`) of highest IoU around the centre of
   its bounding box.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Sequence

import numpy as np
from scipy import ndimage

from dalle_jax.data import shapes

_PALETTE = np.array([shapes.COLOURS[c] for c in shapes.COLOUR_NAMES], np.float32) / 255.0
_BACKGROUND = np.array(shapes.BACKGROUND, np.float32) / 255.0
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "count", "relation")


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str
    size: str
    centre: tuple[float, float]
    iou: float  # how well the best template fits: 1.0 on clean renders


def _pixel_colours(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the index of the best-fitting palette colour and its blend weight alpha."""
    pixels = image.astype(np.float32).reshape(-1, 3) / 255.0 - _BACKGROUND
    directions = _PALETTE - _BACKGROUND  # [colours, 3]
    alpha = np.clip(pixels @ directions.T / np.sum(directions**2, axis=1), 0.0, 1.0)  # [pixels, colours]
    residual = np.linalg.norm(pixels[:, None, :] - alpha[..., None] * directions[None], axis=-1)
    best = np.argmin(residual, axis=1)
    height, width = image.shape[:2]
    return best.reshape(height, width), alpha[np.arange(len(best)), best].reshape(height, width)


@functools.lru_cache(maxsize=None)
def _template_bank(image_size: int) -> tuple[tuple[tuple[str, str], ...], np.ndarray, int, int]:
    """Every (shape, size) drawn around an integer centre `half` in a `[2 half, 2 half]` window,
    and the pixel count of the smallest shape (the speck threshold is relative to it)."""
    half = int(np.ceil(shapes.object_radius("large", image_size))) + 1
    kinds = tuple(itertools.product(shapes.SHAPES, shapes.SIZES))
    bank = np.stack([shapes.shape_mask(shape, shapes.object_radius(size, image_size), (half, half), 2 * half)
                     for shape, size in kinds])
    smallest = int(min(bank[i].sum() for i, (_, size) in enumerate(kinds) if size == "small"))
    return kinds, bank, half, smallest


def _fit_template(component: np.ndarray) -> tuple[str, str, tuple[float, float], float]:
    """Best (shape, size, centre, IoU) for one component mask, over integer centres within
    one pixel of its bounding box's centre (renders use integer centres)."""
    kinds, bank, half, _ = _template_bank(component.shape[0])
    rows, cols = np.nonzero(component)
    box_x, box_y = (cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2
    padded = np.pad(component, half)
    total = component.sum()
    best = ("", "", (box_x, box_y), -1.0)
    size = component.shape[0]
    near = lambda centre: sorted({int(np.clip(np.floor(centre + d), 0, size)) for d in (-1, 0, 0.5, 1)})
    for cx in near(box_x):  # clipped: a generated blob may touch the border
        for cy in near(box_y):
            window = padded[cy: cy + 2 * half, cx: cx + 2 * half]  # centred on (cx, cy)
            inter = np.sum(bank & window, axis=(1, 2))
            iou = inter / (bank.sum(axis=(1, 2)) + total - inter)
            k = int(np.argmax(iou))
            if iou[k] > best[3]:
                best = (*kinds[k], (float(cx), float(cy)), float(iou[k]))
    return best


def parse_image(image: np.ndarray) -> list[DetectedObject]:
    """Objects in a `uint8 [size, size, 3]` image, ordered by centre (x, then y)."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square RGB image [size, size, 3], got shape {image.shape}")
    image_size = image.shape[0]
    colour_index, alpha = _pixel_colours(image)
    labels, count = ndimage.label(alpha > 0.5, structure=np.ones((3, 3)))
    smallest_shape = _template_bank(image_size)[3]
    objects = []
    for label in range(1, count + 1):
        component = labels == label
        if component.sum() < 0.3 * smallest_shape:
            continue  # a speck of noise, not an object
        colour = shapes.COLOUR_NAMES[np.bincount(colour_index[component], minlength=len(_PALETTE)).argmax()]
        shape, size, centre, iou = _fit_template(component)
        objects.append(DetectedObject(colour, shape, size, centre, iou))
    return sorted(objects, key=lambda o: o.centre)


def _match(prompt: Sequence[shapes.SceneObject], found: Sequence[DetectedObject]) -> list[int | None]:
    """For each prompt object, the index of its detected object (or None): the assignment
    that agrees on the most attributes."""
    slots = list(range(len(found))) + [None] * len(prompt)
    best, best_agree = [None] * len(prompt), -1
    for assignment in itertools.permutations(slots, len(prompt)):
        agree = sum((p.colour == found[j].colour) + (p.shape == found[j].shape) + (p.size == found[j].size)
                    for p, j in zip(prompt, assignment) if j is not None)
        if agree > best_agree:
            best, best_agree = list(assignment), agree
    return best


def score(image: np.ndarray, prompt: shapes.Scene) -> dict[str, float]:
    """Scores an image against the scene a prompt describes.

    Returns the fraction of prompt objects with the right `colour`, `shape` and `size`
    (an object not found counts as wrong), `count` (1.0 when exactly as many objects),
    `relation` (two-object prompts: 1.0 when the matched objects stand in the relation;
    other prompts: 1.0) and `all_correct` (1.0 when everything holds).
    """
    found = parse_image(image)
    match = _match(prompt.objects, found)
    fraction = lambda attr: float(np.mean([j is not None and getattr(p, attr) == getattr(found[j], attr)
                                           for p, j in zip(prompt.objects, match)]))
    result = {attr: fraction(attr) for attr in ("colour", "shape", "size")}
    result["count"] = float(len(found) == len(prompt.objects))
    result["relation"] = 1.0
    if prompt.relation is not None:
        a, b = match
        holds = a is not None and b is not None and \
            shapes.relation_between(found[a].centre, found[b].centre) == prompt.relation
        result["relation"] = float(holds)
    result["all_correct"] = float(all(result[attr] == 1.0 for attr in ATTRIBUTES))
    return result


def summarize(scores: Sequence[dict[str, float]], num_objects: Sequence[int]) -> dict[str, dict[str, float]]:
    """Mean of each score, over all images and by number of prompt objects (`"1"`, `"2"`, ...)."""
    groups: dict[str, list[dict[str, float]]] = {"all": list(scores)}
    for s, n in zip(scores, num_objects):
        groups.setdefault(str(n), []).append(s)
    return {name: {key: float(np.mean([s[key] for s in group])) for key in group[0]} | {"n": len(group)}
            for name, group in sorted(groups.items()) if group}
