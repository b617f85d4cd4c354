"""Prompt-following evaluation of a text-to-image model with the oracle.

Prompts are the canonical descriptions of the first `num_prompts` scenes of `validation`
(compositions seen in training) and `test_compositional` (held-out compositions). Each
generated image is scored against its scene; the report gives accuracy per attribute and
all-correct, overall and by number of objects.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tqdm

from dalle_jax.data import shapes
from dalle_jax.eval import oracle

EVAL_SPLITS: tuple[str, ...] = ("validation", "test_compositional")
# (prompts, batch index) -> uint8 [len(prompts), H, W, 3]; the index lets each batch draw its own noise.
Generator = Callable[[list[str], int], np.ndarray]


def prompt_scenes(source, num_prompts: int, image_size: int) -> list[shapes.Scene]:
    return [shapes.Scene.from_features(source[i], image_size) for i in range(min(num_prompts, len(source)))]


def score_generator(generate: Generator, scenes: Sequence[shapes.Scene], *, batch_size: int = 64,
                    desc: str = "") -> tuple[dict, np.ndarray]:
    """(summary by object count, the generated images) for one prompt per scene."""
    images, scores = [], []
    for index, begin in enumerate(tqdm.trange(0, len(scenes), batch_size, desc=desc or "generate", unit="batch")):
        chunk = scenes[begin: begin + batch_size]
        generated = generate([scene.describe() for scene in chunk], index)
        images.append(generated)
        scores.extend(oracle.score(image, scene) for image, scene in zip(generated, chunk))
    return oracle.summarize(scores, [len(s.objects) for s in scenes]), np.concatenate(images)


def markdown_table(report: dict[str, dict]) -> str:
    """One row per (split, object count): n, each attribute and all-correct, in %."""
    columns = (*oracle.ATTRIBUTES, "all_correct")
    lines = ["| split | objects | n | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for split, summary in report.items():
        for group, values in summary.items():
            cells = " | ".join(f"{100 * values[c]:.1f}" for c in columns)
            lines.append(f"| {split} | {group} | {values['n']} | {cells} |")
    return "\n".join(lines)
