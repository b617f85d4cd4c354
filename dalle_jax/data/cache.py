"""Arrays computed once from a data set (image tokens, CLIP embeddings) and kept on disk."""

from __future__ import annotations

import pathlib
import shutil
from typing import Callable

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils


def _save_whole(path: pathlib.Path, array: np.ndarray) -> None:
    """`np.save` under a temporary name, then a rename: the file is there whole or not at all."""
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.rename(path)


def chunks_of_process(begins: list[int], process_index: int, process_count: int) -> list[int]:
    """The chunks (by first row) that one process computes: every `process_count`-th."""
    return begins[process_index::process_count]


def cached_rows(path: str | pathlib.Path, count: int, compute: Callable[[int, int], np.ndarray], *,
                chunk_size: int = 1024, desc: str = "compute", unit: str = "image") -> np.ndarray:
    """`np.load(path)` if it exists, else rows `[0, count)` computed by `compute(begin, end)`
    chunk by chunk and saved to `path`.

    Each chunk is saved whole as `PATH.parts/BEGIN.npy` as soon as it is computed, so a run
    that stops resumes at the first missing chunk. With several processes, process `p`
    computes the chunks `c` with `c % process_count == p` (the work dir must be shared), and
    every process reads the joined array. The name should say what the rows depend on (split
    size, the checkpoint step of the model that computes them).
    """
    path = pathlib.Path(path)
    if path.exists():
        return np.load(path)
    parts = path.with_name(path.name.removesuffix(".npy") + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    begins = list(range(0, count, chunk_size))
    part = lambda begin: parts / f"{begin:012d}.npy"
    rows = lambda begin: min(begin + chunk_size, count) - begin
    mine = chunks_of_process(begins, jax.process_index(), jax.process_count())
    todo = [begin for begin in mine if not part(begin).exists()]
    with tqdm.tqdm(total=sum(map(rows, mine)), initial=sum(map(rows, mine)) - sum(map(rows, todo)), desc=desc,
                   unit=unit, dynamic_ncols=True, disable=not todo) as progress:
        for begin in todo:
            chunk = np.asarray(compute(begin, begin + rows(begin)))
            if len(chunk) != rows(begin):
                raise ValueError(f"compute({begin}, {begin + rows(begin)}) gave {len(chunk)} rows")
            _save_whole(part(begin), chunk)
            progress.update(len(chunk))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"computed {path.name}")
    array = np.concatenate([np.load(part(begin)) for begin in begins]) if begins else np.zeros((0,))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"read {path.name}")
    if jax.process_index() == 0:
        _save_whole(path, array)
        shutil.rmtree(parts, ignore_errors=True)
    return array
