"""DALL·E 3's commands: the captioner, caption, recaption and the three-arm experiment."""

from __future__ import annotations

import json

from absl import app

from dalle_jax.cli import common
from dalle_jax.cli.common import FLAGS


def train_captioner(config) -> None:
    from dalle_jax.experiments import dalle3
    from dalle_jax.tasks.captioner import CaptionerTask

    config = dalle3.captioner_config(config, FLAGS.mode or config.captioner.mode)
    common.train_task(config, CaptionerTask.from_config(config, common.workdir()))


def caption(config) -> None:
    import jax
    import numpy as np

    from dalle_jax.experiments import dalle3

    if not FLAGS.image:
        raise app.UsageError("caption needs at least one --image")
    images = np.stack([common.read_image(path, config) for path in FLAGS.image])  # a bad file is refused first
    task, params = dalle3.trained_captioner(config, common.workdir(), FLAGS.mode or config.captioner.mode)
    for path, text in zip(FLAGS.image, task.caption(params, images, jax.random.key(config.seed))):
        print(f"{path}\t{text}")


def recaption(config) -> None:
    from dalle_jax.experiments import dalle3

    mode = FLAGS.mode or "descriptive"
    result = dalle3.recaption_data(config, common.workdir(), mode)
    print(json.dumps({k: result[k] for k in ("mode", "throughput", "quality")}, indent=2))
    print(f"wrote {common.workdir() / 'data'} ({dalle3.recaptioned_name(config.data, mode)}) and "
          f"{common.workdir() / 'recaption' / mode / 'quality.json'}")


def experiment(config) -> None:
    from dalle_jax.experiments import dalle3

    report = dalle3.run(config, common.workdir())
    print(dalle3.markdown_report(report))
    print(f"wrote {common.workdir() / 'experiment.json'} and experiment.md")

