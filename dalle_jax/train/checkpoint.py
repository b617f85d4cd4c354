"""Checkpoints: the train state, the data-iterator state and the config, saved together.

A thin layer over `orbax.checkpoint.CheckpointManager`: saves every
`save_every` steps (or when forced), keeps the last `keep`, and restores onto the
shardings of a freshly built (abstract) state. A checkpoint whose shapes do not fit the
config is refused with the parameters that differ. A damaged checkpoint (a truncated or
missing file: orbax's own saves are atomic, so it comes from outside, such as a disk fault)
is refused naming its step and the newest intact one, with the command that sets the damaged
step aside: nothing is skipped, deleted or overwritten silently.

Imported weights (`run.py import-weights`) are variables alone, with no optimizer state:
`save_variables` / `restore_variables`.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays do not have the shapes the config builds."""


class CheckpointSaveError(RuntimeError):
    """Saving (or finishing an asynchronous save) failed; the cause is `__cause__`."""


class CheckpointDamagedError(ValueError):
    """A checkpoint cannot be read; `intact_step` is the newest older one that can (or None)."""

    def __init__(self, directory: pathlib.Path, step: int, cause: BaseException, intact_step: int | None):
        reason = re.split(r"\n|\. See ", str(cause).strip())[0][:200] or type(cause).__name__  # tensorstore's are long
        advice = (f"step {intact_step} is intact: set the damaged one aside with `mv {directory / str(step)} "
                  f"{directory / f'{step}.damaged'}` and run the command again" if intact_step is not None
                  else "no older checkpoint is intact")
        super().__init__(f"checkpoint {directory / str(step)} is damaged ({reason[:300]}); {advice}")
        self.step, self.intact_step = step, intact_step


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
        """Saves if `step` is due (or `force`); returns whether it saved. Raises `CheckpointSaveError`
        if this save, or the asynchronous one before it, fails."""
        try:
            return self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config_json)), force=force)
        except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many kinds for a failed write)
            raise CheckpointSaveError(f"saving step {step} to {self.directory} failed") from error

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
        """(state, data_state, step) of `step` (default: latest) laid out like `abstract_state`,
        a tree of `jax.ShapeDtypeStruct`s with shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        try:
            return self._restore(step, abstract_state)
        except CheckpointMismatchError:
            raise
        except Exception as error:  # noqa: BLE001  (orbax and tensorstore raise many kinds for a damaged file)
            older = (s for s in sorted(self.all_steps(), reverse=True) if s < step and self._readable(s, abstract_state))
            raise CheckpointDamagedError(self.directory, step, error, next(older, None)) from error

    def _restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, int]:
        self._check_shapes(step, abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], step

    def _readable(self, step: int, abstract_state: Any) -> bool:
        try:
            jax.block_until_ready(self._restore(step, abstract_state)[0])
            return True
        except Exception:  # noqa: BLE001
            return False

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        saved = self._manager.item_metadata(step)["state"]
        check_shapes(saved, abstract_state, f"checkpoint {self.directory / str(step)}")

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk; `CheckpointSaveError` if one failed."""
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise CheckpointSaveError(f"an asynchronous save to {self.directory} failed") from error

    def close(self) -> None:
        self._manager.close()


def check_shapes(saved: Any, abstract: Any, what: str) -> None:
    """Raises `CheckpointMismatchError` listing the arrays whose saved shapes (`saved`, a tree of
    metadata or arrays; `what` names it) differ from those the config builds (`abstract`)."""
    saved_shapes = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_leaves_with_path(saved)}
    wanted = {_path_name(p): tuple(a.shape) for p, a in jax.tree_util.tree_leaves_with_path(abstract)}
    problems = [f"{k}: checkpoint {saved_shapes.get(k, 'missing')} vs config {v}"
                for k, v in wanted.items() if saved_shapes.get(k) != v]
    problems += [f"{k}: in checkpoint, not built by config" for k in saved_shapes if k not in wanted]
    if problems:
        listed = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise CheckpointMismatchError(
            f"{what} does not fit the config ({len(problems)} arrays differ):\n  {listed}")


def save_variables(directory: str | pathlib.Path, variables: Any) -> None:
    """Writes a variables tree (arrays, no optimizer state) to `directory`, which must not exist."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(pathlib.Path(directory).absolute(), variables)


def restore_variables(directory: str | pathlib.Path, abstract: Any) -> Any:
    """The variables `save_variables` wrote, laid out like `abstract` (shapes, dtypes, shardings)."""
    directory = pathlib.Path(directory).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        check_shapes(checkpointer.metadata(directory).item_metadata, abstract, f"checkpoint {directory}")
        return checkpointer.restore(directory, abstract)


def latest_step(directory: str | pathlib.Path) -> int | None:
    """The latest saved step under `directory` (None if there is none), without keeping a manager open."""
    checkpointer = Checkpointer(directory, save_every=1, keep=None, async_save=False)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()
