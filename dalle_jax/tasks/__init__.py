"""Tasks by name: what `config.task` may say."""

from __future__ import annotations

import difflib

from dalle_jax.tasks.captioner import CaptionerTask
from dalle_jax.tasks.clip import ClipTask
from dalle_jax.tasks.dalle import DalleTask
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
from dalle_jax.tasks.toy import ToyTask

TASKS = {"toy": ToyTask, "image_tokenizer": ImageTokenizerTask, "dalle": DalleTask, "clip": ClipTask,
         "captioner": CaptionerTask}


def make_task(config, workdir=None):
    """The task that `config.task` names, built from the config (and the run's work dir,
    for tasks that build on earlier stages)."""
    if config.task not in TASKS:
        hint = difflib.get_close_matches(config.task, TASKS, n=1)
        raise ValueError(f"unknown task {config.task!r}; known tasks: {sorted(TASKS)}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return TASKS[config.task].from_config(config, workdir)
