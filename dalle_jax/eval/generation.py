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


def generate_candidates(generate: Generator, prompts: Sequence[str], *, candidates: int = 1, batch_size: int = 64,
                        desc: str = "generate") -> np.ndarray:
    """`uint8 [len(prompts), candidates, H, W, 3]`: `candidates` independent images per prompt."""
    repeated = [p for p in prompts for _ in range(candidates)]
    images = [generate(repeated[begin: begin + batch_size], index) for index, begin in
              enumerate(tqdm.trange(0, len(repeated), batch_size, desc=desc, unit="batch"))]
    images = np.concatenate(images)
    return images.reshape(len(prompts), candidates, *images.shape[1:])


def score_images(images: np.ndarray, scenes: Sequence[shapes.Scene]) -> dict:
    """Oracle summary (by object count) of one image per scene."""
    scores = [oracle.score(image, scene) for image, scene in zip(images, scenes)]
    return oracle.summarize(scores, [len(s.objects) for s in scenes])


def markdown_table(report: dict[str, dict]) -> str:
    """One row per (split, object count): n, each attribute and all-correct in %, and CLIP score if present."""
    columns = (*oracle.ATTRIBUTES, "all_correct")
    with_clip = any("clip_score" in values for summary in report.values() for values in summary.values())
    header = " | ".join(columns) + (" | clip_score" if with_clip else "")
    lines = [f"| split | objects | n | {header} |", "|---|---|---|" + "---|" * (len(columns) + with_clip)]
    for split, summary in report.items():
        for group, values in summary.items():
            cells = " | ".join(f"{100 * values[c]:.1f}" for c in columns)
            if with_clip:
                cells += f" | {values['clip_score']:.1f}" if "clip_score" in values else " | "
            lines.append(f"| {split} | {group} | {values['n']} | {cells} |")
    return "\n".join(lines)
