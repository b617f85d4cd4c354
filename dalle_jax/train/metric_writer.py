"""Metrics and pictures to TensorBoard event files (tensorboardX, no TensorFlow); metrics to `metrics.jsonl`.

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tensorboard = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # imported here: only process 0 writes

            workdir = pathlib.Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(logdir=str(workdir / "tensorboard"))
            self._jsonl = open(workdir / "metrics.jsonl", "a")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
        for key, value in scalars.items():
            self._tensorboard.add_scalar(key, value, global_step=step)
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()

    def write_pictures(self, step: int, pictures: Mapping[str, np.ndarray]) -> None:
        """`uint8 [H, W, 3]` pictures to TensorBoard as `pictures/NAME` (metrics.jsonl holds numbers only)."""
        if not self.enabled:
            return
        for name, image in pictures.items():
            self._tensorboard.add_image(f"pictures/{name}", np.asarray(image, np.uint8), global_step=step,
                                        dataformats="HWC")
        self._tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """The rows of `workdir/metrics.jsonl`, oldest first."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
