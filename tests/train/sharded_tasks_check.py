"""Run in a subprocess with 8 fake CPU devices (see test_multidevice.py); prints JSON.

Trains every task of the three generations for a few steps on one device and on a
`data=2, fsdp=2, tensor=2` mesh of eight, with the default sharding rules, and reports both
runs' losses and where the largest kernels of the eight-device run live. A task's earlier
stages (tokenizers, CLIP) come from its one-device run, which both runs then read.
"""

import json
import pathlib
import sys
import time

import jax
import numpy as np

from dalle_jax.config import load_config, stage_config
from dalle_jax.data import pipeline
from dalle_jax.experiments import dalle3
from dalle_jax.tasks.captioner import CaptionerTask
from dalle_jax.tasks.clip import ClipTask
from dalle_jax.tasks.dalle import DalleTask
from dalle_jax.tasks.decoder import DecoderTask, UpsamplerTask
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
from dalle_jax.tasks.prior import PriorTask
from dalle_jax.text import tokenizer
from dalle_jax.train import partitioning, trainer
from dalle_jax.train.metric_writer import read_metrics

STEPS = 3


def _overrides(data_dir: str) -> dict:
    return {"data.data_dir": data_dir, "train.progress_bar": False, "train.image_every": 0}


def _staged(config, steps: int = STEPS):
    config.unlock()
    config.train.update(steps=steps, log_every=1, save_every=steps, eval_every=0)
    return config


def _largest_kernels(params, count: int = 3) -> list[dict]:
    """The `count` largest parameters: their shapes, and the shape of the piece one device holds."""
    leaves = sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda item: -item[1].size)[:count]
    return [{"name": jax.tree_util.keystr(path), "shape": list(leaf.shape),
             "shard_shape": list(leaf.sharding.shard_shape(leaf.shape))} for path, leaf in leaves]


def _bytes_per_device(tree) -> tuple[int, int]:
    """(the bytes of a tree's arrays, the part device 0 holds)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)]
    total = sum(leaf.nbytes for leaf in leaves)
    device_0 = sum(shard.data.nbytes for leaf in leaves for shard in leaf.addressable_shards
                   if shard.device == jax.devices()[0])
    return total, device_0


def compare(config, workdir: pathlib.Path, make_task, meshes) -> dict:
    """Trains `make_task()` into `workdir/TASK` on one device and into `workdir/eight/TASK` on eight."""
    one, eight = meshes
    task = make_task()
    state_one = trainer.train(config, workdir / task.name, task, mesh=one)
    state_eight = trainer.train(config, workdir / "eight" / task.name, make_task(), mesh=eight)
    param_diff = max(float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
                     for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_eight.params)))
    total, device_0 = _bytes_per_device(state_eight.params)
    opt_total, opt_device_0 = _bytes_per_device(state_eight.opt_state)
    return {
        "losses_one_device": [row["loss"] for row in read_metrics(workdir / task.name)],
        "losses_eight_devices": [row["loss"] for row in read_metrics(workdir / "eight" / task.name)],
        "max_param_diff": param_diff,
        "largest_kernels": _largest_kernels(state_eight.params),
        "param_bytes": total,
        "param_bytes_device_0": device_0,
        "opt_state_bytes": opt_total,
        "opt_state_bytes_device_0": opt_device_0,
    }


def main(group: str, data_dir: str, workdir: str):
    workdir = pathlib.Path(workdir)
    devices = jax.devices()
    meshes = (partitioning.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices[:1]),
              partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, devices))
    report = {"num_devices": len(devices), "tasks": {}}

    def run(name, config, make_task, directory):
        start = time.perf_counter()
        report["tasks"][name] = compare(config, directory, make_task, meshes)
        report["tasks"][name]["seconds"] = time.perf_counter() - start

    if group == "dalle":  # DALL·E 1 and 3: image tokenizer, transformer, captioner (over a CLIP)
        config = load_config(str(REPO / "configs/shapes_dalle3.py:tiny"), _overrides(data_dir))
        _train_text_tokenizer(config, workdir)
        tokenizer_config = _staged(stage_config(config, "image_tokenizer"))
        run("image_tokenizer", tokenizer_config, lambda: ImageTokenizerTask.from_config(tokenizer_config), workdir)
        dalle_config = _staged(config.copy_and_resolve_references())
        run("dalle", dalle_config, lambda: DalleTask.from_config(dalle_config, workdir), workdir)
        clip_config = _staged(dalle3.clip_config(config))
        trainer.train(clip_config, workdir / "clip", ClipTask.from_config(clip_config, workdir), mesh=meshes[0])
        captioner_config = _staged(dalle3.captioner_config(config, "alt"))
        run("captioner", captioner_config, lambda: CaptionerTask.from_config(captioner_config, workdir), workdir)
    elif group == "unclip":  # DALL·E 2: CLIP, both priors, decoder, upsampler
        config = load_config(str(REPO / "configs/shapes_unclip.py:tiny"), _overrides(data_dir))
        _train_text_tokenizer(config, workdir)
        clip_config = _staged(config.copy_and_resolve_references())
        run("clip", clip_config, lambda: ClipTask.from_config(clip_config, workdir), workdir)
        for kind in ("diffusion", "autoregressive"):
            prior_config = _staged(stage_config(config, "prior"))
            prior_config.prior.kind = kind
            run(f"prior_{kind}", prior_config, lambda c=prior_config: PriorTask.from_config(c, workdir), workdir)
        for stage, task_class in (("decoder", DecoderTask), ("upsampler", UpsamplerTask)):
            staged = _staged(stage_config(config, stage))
            run(stage, staged, lambda c=staged, t=task_class: t.from_config(c, workdir), workdir)
    else:
        raise ValueError(f"unknown group {group!r}")
    print(json.dumps(report))


def _train_text_tokenizer(config, workdir: pathlib.Path) -> None:
    source = pipeline.load_sources(config.data)["train"]
    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer.train_from_source(source, config.text.vocab_size).save(workdir)


REPO = pathlib.Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    main(*sys.argv[1:])
