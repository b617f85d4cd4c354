"""Prompt-following evaluation of a text-to-image model with the oracle.

Prompts are the canonical descriptions of the first `num_prompts` scenes of `validation`
(compositions seen in training) and `test_compositional` (held-out compositions). Each
generated image is scored against its scene; the report gives accuracy per attribute and
all-correct, overall and by number of objects.
"""

from __future__ import annotations

import json
import pathlib
from typing import Callable, Sequence

import jax
import numpy as np
import tqdm

from dalle_jax import viz
from dalle_jax.data import shapes
from dalle_jax.eval import oracle, rerank

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


def evaluate_on_captions(generate_batch: Callable[[list[str], jax.Array], np.ndarray], source, *, num_prompts: int,
                         rng: jax.Array, batch_size: int, clip_embedders=None,
                         out_dir: str | pathlib.Path | None = None) -> dict:
    """What applies to a data set with no oracle: images for the first `num_prompts`
    validation captions, their mean CLIP score against those captions (when a CLIP is given),
    beside the true images' CLIP score as the ceiling. With `out_dir`, writes `eval.json`,
    `eval.md`, `eval_validation.npz` and `eval_validation.png` (each true image beside its sample)."""
    examples = [source[i] for i in range(min(num_prompts, len(source)))]
    if not examples:
        raise ValueError("the validation split is empty: nothing to evaluate against")
    prompts = [e["caption"] for e in examples]
    generate = lambda batch_prompts, batch: generate_batch(batch_prompts, jax.random.fold_in(rng, batch))
    images = generate_candidates(generate, prompts, batch_size=batch_size, desc="eval validation")[:, 0]
    truth = np.stack([e["image"] for e in examples])
    report = {"validation": {"n": len(prompts)}}
    if clip_embedders is not None:
        report["validation"]["clip_score"] = float(rerank.clip_scores(images, prompts, *clip_embedders).mean())
        report["validation"]["clip_score_true_images"] = float(
            rerank.clip_scores(truth, prompts, *clip_embedders).mean())
    if out_dir is not None:
        out_dir = pathlib.Path(out_dir)
        np.savez_compressed(out_dir / "eval_validation.npz", images=images, prompts=np.array(prompts))
        pairs = [image for pair in zip(truth[:16], images[:16]) for image in pair]
        labels = [label for p in prompts[:16] for label in (f"true: {p}", f"sample: {p}")]
        viz.save_grid(out_dir / "eval_validation.png", pairs, labels, columns=8, scale=viz.tile_scale(truth.shape[1]),
                      label_lines=4)
        (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
        row = report["validation"]
        scores = " | ".join(f"{row[k]:.1f}" if k in row else "–" for k in ("clip_score", "clip_score_true_images"))
        (out_dir / "eval.md").write_text("| split | n | CLIP score | CLIP score of the true images |\n"
                                         f"|---|---|---|---|\n| validation | {row['n']} | {scores} |\n")
    return report


def evaluate_text_to_image(generate_batch: Callable[[list[str], jax.Array], np.ndarray], sources: dict, *,
                           num_prompts: int, image_size: int, rng: jax.Array, batch_size: int,
                           clip_embedders=None, rerank_candidates: int = 0, out_dir: str | pathlib.Path | None = None,
                           ) -> dict:
    """Oracle (and CLIP score) report of a text-to-image model on every `EVAL_SPLITS` split.

    `generate_batch(prompts, key)` returns `uint8 [len(prompts), H, W, 3]`. With
    `rerank_candidates = N`, N candidates are drawn per prompt, the first is scored as the
    plain sample and the one CLIP prefers as `SPLIT_rerankN_keep1`. With `out_dir`, writes
    `eval.json`, `eval.md` and per row `eval_ROW.npz` (images and prompts) and `eval_ROW.png`.
    """
    report, images_by_row = {}, {}
    for i, split in enumerate(EVAL_SPLITS):
        scenes = prompt_scenes(sources[split], num_prompts, image_size)
        prompts = [scene.describe() for scene in scenes]
        split_key = jax.random.fold_in(rng, i)
        candidates = generate_candidates(lambda batch_prompts, batch: generate_batch(
            batch_prompts, jax.random.fold_in(split_key, batch)), prompts, candidates=max(rerank_candidates, 1),
            batch_size=batch_size, desc=f"eval {split}")
        rows = {split: candidates[:, 0]}  # the first candidate is an ordinary sample
        if rerank_candidates:
            rows[f"{split}_rerank{rerank_candidates}_keep1"] = rerank.rerank(candidates, prompts, *clip_embedders,
                                                                            keep=1)[0][:, 0]
        for name, images in rows.items():
            report[name] = score_images(images, scenes)
            if clip_embedders is not None:
                report[name]["all"]["clip_score"] = float(rerank.clip_scores(images, prompts, *clip_embedders).mean())
            images_by_row[name] = (images, prompts)
    if out_dir is not None:
        out_dir = pathlib.Path(out_dir)
        for name, (images, prompts) in images_by_row.items():
            np.savez_compressed(out_dir / f"eval_{name}.npz", images=images, prompts=np.array(prompts))
            viz.save_grid(out_dir / f"eval_{name}.png", images[:32], prompts[:32], columns=8,
                          scale=viz.tile_scale(images.shape[-2]), label_lines=4)
        (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
        (out_dir / "eval.md").write_text(markdown_table(report) + "\n")
    return report
