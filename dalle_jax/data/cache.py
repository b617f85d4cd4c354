"""Arrays computed once from a data set (image tokens, CLIP embeddings) and kept on disk."""

from __future__ import annotations

import pathlib
from typing import Callable

import jax
import numpy as np


def cached_array(path: str | pathlib.Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`np.load(path)` if it exists, else `compute()`, saved to `path` by process 0.

    The file is written under a temporary name and renamed, so a crash never leaves a
    half-written cache. The name should say what the array depends on (split size, the
    checkpoint step of the model that computed it).
    """
    path = pathlib.Path(path)
    if path.exists():
        return np.load(path)
    array = compute()
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        tmp.rename(path)
    return array
