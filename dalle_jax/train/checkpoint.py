"""Checkpoints: the train state, the data-iterator state and the config, saved together.

A thin layer over `orbax.checkpoint.CheckpointManager`: saves every
`save_every` steps (or when forced), keeps the last `keep`, and restores onto the
shardings of a freshly built (abstract) state. A checkpoint whose shapes do not fit the
config is refused with the parameters that differ.

Imported weights (`run.py import-weights`) are variables alone, with no optimizer state:
`save_variables` / `restore_variables`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not have the shapes the config builds."""


def _path_name(path) -> str:
    """`params/hidden/kernel` for a key path, whether its nodes are dicts, lists or dataclasses."""
    parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return "/".join(str(part) for part in parts)


class Checkpointer:
    def __init__(self, directory: str | pathlib.Path, *, save_every: int, keep: int, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                    "config": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, config_json: dict, *, force: bool = False) -> bool:
        """Saves if `step` is due (or `force`); returns whether it saved."""
        return self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config_json)), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """(state, data_state, step) of `step` (default: latest) laid out like `abstract_state`,
        a tree of `jax.ShapeDtypeStruct`s with shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        self._check_shapes(step, abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], step

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        check_shapes(self._manager.item_metadata(step)["state"], abstract_state, self.directory / str(step))

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def check_shapes(saved: Any, abstract: Any, location: pathlib.Path) -> None:
    """Raises `CheckpointMismatchError` listing the arrays whose saved shapes (`saved`, a tree of
    metadata or arrays) differ from those the config builds (`abstract`)."""
    saved_shapes = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
    wanted = {_path_name(p): tuple(a.shape) for p, a in jax.tree_util.tree_leaves_with_path(abstract)}
    problems = [f"{k}: checkpoint {saved_shapes.get(k, 'missing')} vs config {v}"
                for k, v in wanted.items() if saved_shapes.get(k) != v]
    problems += [f"{k}: in checkpoint, not built by config" for k in saved_shapes if k not in wanted]
    if problems:
        listed = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise CheckpointMismatchError(
            f"checkpoint {location} does not fit the config ({len(problems)} arrays differ):\n  {listed}")


def save_variables(directory: str | pathlib.Path, variables: Any) -> None:
    """Writes a variables tree (arrays, no optimizer state) to `directory`, which must not exist."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(pathlib.Path(directory).absolute(), variables)


def restore_variables(directory: str | pathlib.Path, abstract: Any) -> Any:
    """The variables `save_variables` wrote, laid out like `abstract` (shapes, dtypes, shardings)."""
    directory = pathlib.Path(directory).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        check_shapes(checkpointer.metadata(directory).item_metadata, abstract, directory)
        return checkpointer.restore(directory, abstract)


def latest_step(directory: str | pathlib.Path) -> int | None:
    """The latest saved step under `directory` (None if there is none), without keeping a manager open."""
    checkpointer = Checkpointer(directory, save_every=1, keep=None, async_save=False)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()
