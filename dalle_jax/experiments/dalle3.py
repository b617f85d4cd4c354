"""The DALL·E 3 recaptioning experiment, stage by stage, in one work dir.

Every stage is skipped when its output is complete and resumed when it is partial, so the
whole experiment can be stopped and started again:

  text_tokenizer.model, image_tokenizer/, clip/        the DALL·E 1 and CLIP stages
  captioner_alt/, captioner_short/, captioner_descriptive/
  recaption/MODE/                                      caption chunks, quality.json
  data/recaptioned/...                                 the recaptioned tfds data sets
  dalle_ARM/                                           one text-to-image model per arm, eval.*
  experiment.json, experiment.md, arms.png             the comparison
"""

from __future__ import annotations

import json
import logging
import pathlib
import re

import jax
import ml_collections
import numpy as np

from dalle_jax import viz
from dalle_jax.config import apply_overrides, config_from_file, stage_config
from dalle_jax.data import pipeline, recaption, shapes
from dalle_jax.eval import captions, generation, oracle
from dalle_jax.tasks.captioner import CaptionerTask
from dalle_jax.tasks.clip import ClipTask
from dalle_jax.tasks.dalle import DalleTask
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
from dalle_jax.text import tokenizer
from dalle_jax.train import checkpoint, trainer

log = logging.getLogger(__name__)


def train_stage(config, run_dir: pathlib.Path, task) -> None:
    """Trains `task` into `run_dir` unless its final checkpoint is there; resumes a partial run."""
    if checkpoint.latest_step(run_dir / "checkpoints") == config.train.steps:
        log.info("%s: done (step %d), skipped", run_dir, config.train.steps)
        return
    trainer.train(config, run_dir, task, resume=True)


def captioner_config(config, mode: str) -> ml_collections.ConfigDict:
    """The config that trains the captioner in `mode` (fine-tunes run `captioner.finetune_steps[mode]`)."""
    staged = stage_config(config, "captioner")
    staged.captioner.mode = mode
    if mode != "alt":
        staged.train.steps = config.captioner.finetune_steps[mode]
    return staged


def clip_config(config) -> ml_collections.ConfigDict:
    """`config.clip_config` (its own training schedule) on this experiment's data."""
    clip = config_from_file(config.clip_config)
    overrides = {f"data.{k}": v for k, v in config.data.items()}
    apply_overrides(clip, overrides | {"text.max_length": config.text.max_length})
    clip.lock()
    return clip


def trained_captioner(config, workdir: pathlib.Path, mode: str):
    """(task, params) of the captioner trained in `workdir/captioner_MODE`."""
    staged = captioner_config(config, mode)
    task = CaptionerTask.from_config(staged, workdir)
    return task, trainer.load_variables(staged, workdir / task.name, task)["params"]


def recaptioned_name(data_config, mode: str) -> str:
    """The tfds config name of a recaptioned copy of `config.data`."""
    source = pipeline.source_name(data_config)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", source) + f"_{mode}"


def recaption_data(config, workdir: pathlib.Path, mode: str) -> dict:
    """Captions every split with the `mode` captioner and writes the recaptioned data set.

    Returns `{"throughput": ..., "quality": caption quality on validation}` (also written to
    `recaption/MODE/quality.json`, with a PNG grid of validation images and both captions).
    """
    task, params = trained_captioner(config, workdir, mode)
    sources = pipeline.load_sources(config.data)
    batch_size = config.recaption.batch_size
    rng = jax.random.key(config.seed)

    def caption_fn(images: np.ndarray, chunk_index: int) -> list[str]:
        texts = []
        for begin in range(0, len(images), batch_size):
            batch = images[begin: begin + batch_size]
            padded = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)])
            key = jax.random.fold_in(jax.random.fold_in(rng, chunk_index), begin)
            texts += task.caption(params, padded, key)[: len(batch)]  # one compiled shape
        return texts

    out_dir = workdir / "recaption" / mode
    chunk_size = config.recaption.chunk_size
    throughput = recaption.write_captions(caption_fn, sources, out_dir, chunk_size=chunk_size)
    # Written from the stored examples as they are (a data set of your own keeps its JPEG bytes).
    recaption.build_recaptioned(workdir / "data", recaptioned_name(config.data, mode),
                                pipeline.load_sources(config.data, decode_images=False), out_dir, chunk_size)
    validation = sources["validation"]
    written = recaption.read_captions(out_dir, "validation", len(validation), chunk_size)
    quality = None  # scored against the truth: the shapes data set's alone
    if not pipeline.is_own_data(config.data):
        scenes = [shapes.Scene.from_features(validation[i], config.data.image_size) for i in range(len(validation))]
        quality = captions.caption_quality(written, scenes)
    report = {"mode": mode, "throughput": throughput, "quality": quality,
              "examples": [{"truth": validation[i]["caption"], "synthetic": written[i]}
                           for i in range(min(8, len(validation)))]}
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2))
    shown = range(min(16, len(validation)))
    viz.save_grid(out_dir / "validation_captions.png", [validation[i]["image"] for i in shown],
                  [f"truth: {validation[i]['caption']} | {mode}: {written[i]}" for i in shown], columns=4, scale=4,
                  label_lines=9)
    return report


def arm_config(config, workdir: pathlib.Path, arm: str) -> ml_collections.ConfigDict:
    """Text-to-image training for one arm: alt-text captions, or a synthetic mode blended in."""
    staged = ml_collections.ConfigDict(config.to_dict())
    staged.train.steps = config.experiment.dalle_steps
    staged.text.caption_field = "alt_text"
    if arm != "alt":
        staged.data.source = ""  # the recaptioned copy, not the source it was built from
        staged.data.name = f"{recaption.NAME}/{recaptioned_name(config.data, arm)}"
        staged.data.data_dir = str(workdir / "data")
        staged.text.synthetic_caption_field = recaption.CAPTION_FEATURE
        staged.text.synthetic_caption_rate = config.experiment.synthetic_caption_rate
    staged.lock()
    return staged


def run(config, workdir: str | pathlib.Path) -> dict:
    """Every stage of the experiment; returns (and writes) the comparison of the arms."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sources = pipeline.load_sources(config.data)
    if not (workdir / tokenizer.MODEL_FILE).exists():
        tokenizer.train_from_source(sources["train"], config.text.vocab_size).save(workdir)
    staged = stage_config(config, "image_tokenizer")
    train_stage(staged, workdir / "image_tokenizer", ImageTokenizerTask.from_config(staged))
    clip = clip_config(config)
    clip_task = ClipTask.from_config(clip, workdir)
    train_stage(clip, workdir / "clip", clip_task)
    clip_embedders = clip_task.embedders(trainer.load_variables(clip, workdir / "clip", clip_task)["params"])
    for mode in ("alt", "short", "descriptive"):
        staged = captioner_config(config, mode)
        train_stage(staged, workdir / f"captioner_{mode}", CaptionerTask.from_config(staged, workdir))

    scenes = [shapes.Scene.from_features(e, config.data.image_size) for e in sources["validation"]]
    report = {"caption_quality": {"alt_text (original)": captions.caption_quality(
        [e["alt_text"] for e in sources["validation"]], scenes)}, "recaption_throughput": {}, "arms": {}}
    for mode in config.experiment.arms:
        if mode != "alt":
            result = recaption_data(config, workdir, mode)
            report["caption_quality"][f"{mode} (synthetic)"] = result["quality"]
            report["recaption_throughput"][mode] = result["throughput"]

    for arm in config.experiment.arms:
        arm_cfg = arm_config(config, workdir, arm)
        task = DalleTask.from_config(arm_cfg, workdir)
        run_dir = workdir / f"dalle_{arm}"
        train_stage(arm_cfg, run_dir, task)
        params = trainer.load_variables(arm_cfg, run_dir, task)["params"]
        report["arms"][arm] = generation.evaluate_text_to_image(
            lambda prompts, key, task=task, params=params: task.generate(params, prompts, key), sources,
            num_prompts=config.experiment.num_prompts, image_size=config.data.image_size,
            rng=jax.random.key(config.seed), batch_size=config.sample.batch_size, clip_embedders=clip_embedders,
            out_dir=run_dir)
    (workdir / "experiment.json").write_text(json.dumps(report, indent=2))
    (workdir / "experiment.md").write_text(markdown_report(report) + "\n")
    save_arms_picture(workdir, config.experiment.arms, scenes)
    return report


def arms_prompts(objects: list[int], per_count: int) -> list[int]:
    """Indices of the first `per_count` prompts with one object, then of those with two."""
    return [i for count in (1, 2) for i in [j for j, n in enumerate(objects) if n == count][:per_count]]


def save_arms_picture(workdir: pathlib.Path, arms, scenes: list[shapes.Scene],
                      per_count: int = 3) -> pathlib.Path | None:
    """`arms.png`: one row per arm, its samples for the same validation prompts (the first
    `per_count` with one object and with two), read back from each arm's `eval_validation.npz`;
    None, and no picture, when no evaluated prompt has one or two objects."""
    samples = {arm: np.load(workdir / f"dalle_{arm}" / "eval_validation.npz") for arm in arms}
    prompts = [str(p) for p in samples[arms[0]]["prompts"]]
    shown = arms_prompts([len(s.objects) for s in scenes[:len(prompts)]], per_count)
    if not shown:
        log.warning("no picture of the arms: none of the %d evaluated prompts has one or two objects", len(prompts))
        return None
    images = [samples[arm]["images"][i] for arm in arms for i in shown]
    labels = [f"{arm}: {prompts[i]}" for arm in arms for i in shown]
    return viz.save_grid(workdir / "arms.png", images, labels, columns=len(shown),
                         scale=viz.tile_scale(images[0].shape[0]), label_lines=5)


def markdown_report(report: dict) -> str:
    """Two tables: prompt following per arm, and caption quality per caption kind."""
    columns = (*oracle.ATTRIBUTES, "all_correct")
    lines = ["| training captions | prompts | objects | n | " + " | ".join(columns) + " | CLIP score |",
             "|---|---|---|---|" + "---|" * (len(columns) + 1)]
    for arm, splits in report["arms"].items():
        for split, groups in splits.items():
            for group, values in groups.items():
                cells = " | ".join(f"{100 * values[c]:.1f}" for c in columns)
                clip_score = f"{values['clip_score']:.1f}" if "clip_score" in values else ""
                lines.append(f"| {arm} | {split} | {group} | {values['n']} | {cells} | {clip_score} |")
    lines += ["", "| captions (validation) | " + " | ".join(f"{f} P / R" for f in (*captions.FACTS, "all")) + " |",
              "|---|" + "---|" * (len(captions.FACTS) + 1)]
    for kind, quality in report["caption_quality"].items():
        precision = lambda q: f"{100 * q['precision']:.1f}" if q["stated"] else "–"  # nothing stated
        cells = " | ".join(f"{precision(q)} / {100 * q['recall']:.1f}" for q in quality.values())
        lines.append(f"| {kind} | {cells} |")
    return "\n".join(lines)
