"""What every command shares: the flags, the work dir, training a task into it, reading what
earlier commands trained there, reading --image files and writing PNG grids."""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags

flags.DEFINE_string("config", None, "config file, optionally with a :variant")
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the tokenizer go")
flags.DEFINE_bool("resume", False, "continue from the latest checkpoint in --workdir")
flags.DEFINE_string("split", "train", "data split for show-data")
flags.DEFINE_integer("num", 16, "number of examples (show-data) or renders per split (check-oracle)", lower_bound=1)
flags.DEFINE_string("out", None, "output PNG path")
flags.DEFINE_multi_string("prompt", [], "prompt for generate (repeat the flag for several)")
flags.DEFINE_integer("num_samples", 4, "images per prompt for generate", lower_bound=1)
flags.DEFINE_integer("rerank", 0, "generate/eval: draw this many plain samples per prompt and rerank them "
                     "with the CLIP in --workdir/clip, in place of sample.candidates (0: no CLIP reranking)",
                     lower_bound=0)
flags.DEFINE_integer("stage", 1, "train-upsampler: which upsampler of the config's cascade (from 1, lowest "
                     "resolution first)", lower_bound=1)
flags.DEFINE_integer("keep", 1, "generate: candidates kept per prompt after reranking", lower_bound=1)
flags.DEFINE_multi_string("image", [], "caption: an image file (PNG/JPEG; repeat the flag for several)")
flags.DEFINE_enum("mode", None, ["alt", "short", "descriptive"], "train-captioner/caption/recaption: captioner mode")
flags.DEFINE_enum("kind", None, ["openai-dvae", "hf-clip"], "import-weights: what --source holds")
flags.DEFINE_string("source", None, "import-weights: the directory of the released files")
flags.DEFINE_string("weights", None, "unclip-generate/variations: a Karlo snapshot directory (diffusers layout) "
                    "to sample instead of a work dir's stages; --config defaults to configs/karlo.py")
flags.DEFINE_bool("verbose", False, "on an error, print its Python traceback too (always written to "
                  "WORKDIR/last_error.log, or to the temporary directory without a work dir)")
flags.DEFINE_string("host", "127.0.0.1", "serve: the address to listen on (0.0.0.0: every interface)")
flags.DEFINE_integer("port", 7860, "serve: the port", lower_bound=1, upper_bound=65535)
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (several processes; "
                  "docs/performance.md): a cluster launcher JAX detects, or the three flags below")
flags.DEFINE_string("coordinator", None, "--distributed: HOST:PORT of process 0 (else detected, or "
                    "$JAX_COORDINATOR_ADDRESS)")
flags.DEFINE_integer("num_processes", None, "--distributed: how many processes take part", lower_bound=1)
flags.DEFINE_integer("process_id", None, "--distributed: this process's index, 0 .. num_processes - 1", lower_bound=0)
flags.DEFINE_integer("heartbeat_timeout", 100, "--distributed: seconds without a heartbeat after which a process "
                     "counts as dead and every other one stops with an error", lower_bound=1)
FLAGS = flags.FLAGS


def workdir() -> pathlib.Path:
    """--workdir, refused if missing or a file."""
    if not FLAGS.workdir:
        raise app.UsageError("this command needs --workdir")
    path = pathlib.Path(FLAGS.workdir)
    if path.exists() and not path.is_dir():
        raise app.UsageError(f"--workdir {path} is a file, not a directory")
    return path


def train_task(config, task) -> None:
    """Trains `task` into --workdir/TASK (resuming with --resume); a stop signal exits with 143."""
    from dalle_jax.train import trainer

    try:
        trainer.train(config, workdir() / task.name, task, resume=FLAGS.resume)
    except trainer.TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(143)


def trained_params(config, task):
    """The parameters of `task`'s latest checkpoint in --workdir/TASK."""
    from dalle_jax.train import trainer

    return trainer.load_variables(config, workdir() / task.name, task)["params"]


def trained_clip():
    """(embed_images, embed_text) of the CLIP trained in --workdir/clip, or None if there is none."""
    from dalle_jax.tasks.clip import TrainedClip

    if not (workdir() / "clip" / "config.json").exists():
        return None
    return TrainedClip.load(workdir()).embedders()


def clip_for_rerank():
    """`trained_clip()`, or a refusal saying --rerank needs one."""
    embedders = trained_clip()
    if embedders is None:
        raise app.UsageError(f"--rerank needs a CLIP in {workdir() / 'clip'}: run train-clip first")
    return embedders


def read_image(path: str, config, size: int | None = None):
    """An --image file as the models see it (`images.read_input_image`, at `size` or the data's
    size), or a one-line refusal naming it."""
    from dalle_jax.data import images

    try:
        return images.read_input_image(path, size or config.data.image_size, max_pixels=config.data.max_pixels)
    except (OSError, images.Rejected) as error:
        raise app.UsageError(f"cannot read image {path}: {error}")


def input_images(count: int, command: str, config):
    """The --image files, exactly `count` of them, read (and a bad one refused) before any model loads."""
    if len(FLAGS.image) != count:
        raise app.UsageError(f"{command} needs exactly {count} --image file(s), got {len(FLAGS.image)}")
    return [read_image(path, config) for path in FLAGS.image]


def save_rows(rows, labels, default_name: str, columns: int, out_dir: pathlib.Path | None = None) -> None:
    """A PNG grid of `rows` at --out, or `default_name` in `out_dir` (the work dir if None)."""
    import numpy as np

    from dalle_jax import viz

    out = FLAGS.out or str((out_dir or workdir()) / default_name)
    rows = np.concatenate(rows)
    print(viz.save_grid(out, rows, labels, columns=columns, scale=viz.tile_scale(rows.shape[-2]), label_lines=4))

