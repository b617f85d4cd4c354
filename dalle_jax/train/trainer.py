"""The one training loop. It knows no model: a `Task` brings preprocessing, init and loss.

`train` builds the mesh, the sharded state (created in place from logical axis names),
the input pipeline and the checkpointer, then runs the jit-compiled `train_step`. It
saves every `train.save_every` steps and on SIGTERM/SIGINT, resumes exactly with
`resume=True`, and stops at the first non-finite loss without saving it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import threading
import time
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from dalle_jax.data import pipeline
from dalle_jax.train import checkpoint, flops, optim, partitioning
from dalle_jax.train.lock import RunLockedError, run_lock  # noqa: F401  (RunLockedError: part of train's API)
from dalle_jax.train.metric_writer import MetricWriter
from dalle_jax.train.state import TrainState, create_state, step_rng, train_step

log = logging.getLogger(__name__)


class Task(Protocol):
    """A model family as the trainer sees it."""

    name: str

    def preprocess(self, example: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One raw example to arrays of fixed shape (runs in the input pipeline)."""

    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Flax variables (`{"params": ..., other collections}`), boxed with logical axis
        names (`nn.with_logical_partitioning`)."""

    def loss_fn(self, params: Any, batch: dict, rng: jax.Array, *, step: jax.Array,
                model_state: dict) -> tuple[jax.Array, dict, dict]:
        """`(loss, metrics, model_state)` for a global batch; pure and jit-compatible.
        `step` is the optimizer step (for schedules); `model_state` the non-trained collections."""

    # Optional: `compiler_options` (`jax.jit`'s, for the training step; `conv.compiler_options()`
    # for the convolutional models), `evaluate(params, model_state) -> dict` (run every `train.eval_every` steps),
    # `pictures(params, model_state) -> {name: uint8 [H, W, 3]}` (to TensorBoard every
    # `train.image_every` steps) and `initial_params(params) -> params` (pretrained weights for a
    # fresh run; see `starting_params`).


def starting_params(task: Task, params: Any, shardings: Any) -> Any:
    """A fresh run's parameters: `task.initial_params(params)` if the task starts from
    pretrained weights (fine-tuning), else the freshly initialised `params`."""
    initial_params = getattr(task, "initial_params", None)
    if initial_params is None:
        return params
    loaded = initial_params(params)
    if jax.tree.structure(loaded) != jax.tree.structure(params):
        raise ValueError(f"{task.name}: initial_params changed the parameter tree")
    checkpoint.check_shapes(loaded, params, f"the weights {task.name} starts from")
    return jax.device_put(loaded, shardings)


def periodic_evaluation(task: Task, config) -> Callable[[TrainState], dict] | None:
    """`task.evaluate(params, model_state)` if the task has one and `train.eval_every` asks for it."""
    evaluate = getattr(task, "evaluate", None)
    if evaluate is None or not config.train.eval_every:
        return None
    return lambda state: {f"eval/{k}": v for k, v in evaluate(state.params, state.model_state).items()}


def periodic_pictures(task: Task, config) -> Callable[[TrainState], dict] | None:
    """`task.pictures(params, model_state)` if the task draws any and `train.image_every` asks for them."""
    pictures = getattr(task, "pictures", None)
    if pictures is None or not config.train.get("image_every", 0):  # `.get`: runs saved before it existed
        return None
    return lambda state: pictures(state.params, state.model_state)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT arrived; the state was saved at `step` before stopping."""

    def __init__(self, step: int, directory: pathlib.Path):
        super().__init__(f"interrupted: saved step {step} to {directory}; continue with --resume")
        self.step = step


class WriteFailedError(OSError):
    """Writing a checkpoint or the metrics failed (a full disk, a quota, a file-size limit); the
    checkpoints saved before it are intact."""


def _write_failed(what: str, directory: pathlib.Path, error: BaseException, latest: int | None) -> WriteFailedError:
    # The operating system's words ("No space left on device") where the error carries its code:
    # tensorstore's own messages run to several hundred characters of paths.
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if isinstance(error, OSError) and error.errno:
        reason = os.strerror(error.errno)
    elif code:
        reason = os.strerror(int(code.group(1)))
    else:
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    free = shutil.disk_usage(directory).free / 2 ** 20 if directory.exists() else float("nan")
    kept = "no checkpoint was saved before it" if latest is None else f"the checkpoint of step {latest} is intact"
    return WriteFailedError(f"{what} in {directory} failed ({reason}); {kept}. Make room there ({free:.0f} MB free "
                            "now) and continue with --resume")


class RunExistsError(FileExistsError):
    """The work dir already holds checkpoints (or imported weights) and `resume` was not asked for."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _StopFlag:
    """Turns SIGTERM/SIGINT into a stop after a step, with a checkpoint.

    With several processes every one must stop after the same step: SIGTERM is left to JAX's
    preemption service, which tells every process and agrees on the step
    (`multihost_utils.reached_preemption_sync_point`), and SIGINT is passed on to it as SIGTERM.
    """

    def __init__(self):
        self._signalled = False
        self._previous = {}
        self._several = jax.process_count() > 1

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT,) if self._several else _STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self._several:
            signal.raise_signal(signal.SIGTERM)  # to JAX's preemption notifier
            return
        log.warning("received signal %d: saving a checkpoint after this step", signum)
        self._signalled = True

    def due(self, step: int) -> bool:
        """Whether to save and stop after `step`; every process calls it once a step."""
        if self._several:
            if multihost_utils.reached_preemption_sync_point(step):
                log.warning("every process stops after step %d (a stop signal reached one of them)", step)
                return True
            return False
        return self._signalled

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def sharded_state_layout(config, task: Task, optimizer, example: dict, mesh: jax.sharding.Mesh):
    """(init function returning the sharded step-0 state, its shardings, its abstract
    arrays with shardings), from the task's logical axis names and the config's rules."""
    rules = partitioning.rules_from_config(config.sharding.rules)
    init_batch = {k: np.zeros((1, *np.shape(v)), np.asarray(v).dtype) for k, v in example.items()}

    def init_boxed(key):
        return create_state(task.init(key, init_batch), optimizer, key)

    run_key = jax.random.key_data(jax.random.key(config.seed))
    boxed = jax.eval_shape(init_boxed, run_key)
    shardings = partitioning.logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings)
    init = jax.jit(lambda: nn.unbox(init_boxed(run_key)), out_shardings=shardings)
    return init, shardings, abstract


EXAMPLE_SPEC = "example_spec.json"
IMPORTED = "imported"  # a run dir's imported weights: variables alone (`checkpoint.save_variables`)


def _example(task: Task, source) -> dict:
    return task.preprocess(source[0], np.random.default_rng(0))


def example_spec(example: dict) -> dict:
    """The shape and dtype of each array of a preprocessed example, as JSON data."""
    return {k: {"shape": list(np.shape(v)), "dtype": np.asarray(v).dtype.name} for k, v in example.items()}


def saved_example(config, run_dir: pathlib.Path, task: Task) -> dict:
    """Zeros shaped like one preprocessed example of the run: from the `example_spec.json` its
    training wrote, so inference needs no data set; runs saved before it preprocess one."""
    spec_file = run_dir / EXAMPLE_SPEC
    if not spec_file.exists():
        return _example(task, pipeline.load_sources(config.data)["train"])
    return {k: np.zeros(v["shape"], v["dtype"]) for k, v in read_run_file(spec_file).items()}


def run_config(run_dir: str | pathlib.Path, hint: str = "") -> ml_collections.ConfigDict:
    """The config a run trained with (`run_dir/config.json`). Raises `FileNotFoundError` naming
    that file if the run has none, followed by `hint` (how to train it)."""
    config_file = pathlib.Path(run_dir) / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"no trained run in {run_dir} ({config_file} is missing){hint}")
    return ml_collections.ConfigDict(read_run_file(config_file))


def read_run_file(path: pathlib.Path) -> Any:
    """The JSON of a run's `config.json` or `example_spec.json`; a damaged file is a `ValueError`
    naming it (`train --resume` writes both again)."""
    try:
        return json.loads(path.read_text())
    except ValueError as error:  # also a UnicodeDecodeError
        raise ValueError(f"{path} is damaged ({error}); `train --resume` on this run writes it again, or copy it "
                         "from a backup") from None


# Config sections and keys that shape no array: a difference in them explains no mismatch.
_SHAPELESS_SECTIONS = frozenset({"train", "sample", "eval", "mesh", "sharding"})
_SHAPELESS_KEYS = frozenset({"data_dir", "source", "worker_count", "build_workers", "progress_bar", "seed"})


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    items = {}
    for key, value in tree.items():
        items |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return items


def config_changes(run_dir: str | pathlib.Path, config: ml_collections.ConfigDict) -> list[str]:
    """`KEY: RUN'S VALUE → CONFIG'S VALUE` for each key that can shape an array and differs
    between the config a run saved (`run_dir/config.json`) and `config`; [] without a saved config."""
    config_file = pathlib.Path(run_dir) / "config.json"
    if not config_file.exists():
        return []
    saved, wanted = _flat(read_run_file(config_file)), _flat(json.loads(config.to_json_best_effort()))
    changed = []
    for key in sorted(saved.keys() | wanted.keys()):
        parts = key.split(".")
        if _SHAPELESS_SECTIONS.intersection(parts) or parts[-1] in _SHAPELESS_KEYS:
            continue
        if saved.get(key, "(none)") != wanted.get(key, "(none)"):
            changed.append(f"{key}: {saved.get(key, '(none)')} → {wanted.get(key, '(none)')}")
    return changed


@contextlib.contextmanager
def _naming_config_changes(run_dir: pathlib.Path, config: ml_collections.ConfigDict):
    """Adds to a `CheckpointMismatchError` the config keys that likely explain it."""
    try:
        yield
    except checkpoint.CheckpointMismatchError as error:
        raise checkpoint.CheckpointMismatchError(f"{error}\n{_mismatch_hint(run_dir, config)}") from None


def _mismatch_hint(run_dir: pathlib.Path, config: ml_collections.ConfigDict) -> str:
    try:
        changes = config_changes(run_dir, config)
    except ValueError as damaged:
        return str(damaged)
    if not changes:
        return "the run's config agrees on every key that shapes an array: was it saved by other code?"
    more = f"; and {len(changes) - 10} more" if len(changes) > 10 else ""
    return f"the config differs from the run's ({run_dir / 'config.json'}) in: " + "; ".join(changes[:10]) + more


def _write_run_files(run_dir: pathlib.Path, config_json: dict, example: dict) -> None:
    """`config.json` and `example_spec.json`: what loading a run's variables needs besides them."""
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (("config.json", config_json), (EXAMPLE_SPEC, example_spec(example))):
            partial = run_dir / f".{name}.writing"  # renamed into place: a killed write leaves the old file
            partial.write_text(json.dumps(content, indent=2))
            partial.replace(run_dir / name)


def write_imported_run(run_dir: str | pathlib.Path, config: ml_collections.ConfigDict, example: dict,
                       variables: dict, extra_files: Callable[[pathlib.Path], Any] = lambda directory: None) -> None:
    """A run dir for weights trained elsewhere: its config, its example's shapes and the variables
    (`RUN_DIR/imported`), which `load_variables` reads like a trained run's latest checkpoint;
    `extra_files(directory)` adds what else the run needs (a tokenizer). Written beside `run_dir`
    and renamed into place, so a killed import leaves no half run; an existing `run_dir` is refused."""
    run_dir = pathlib.Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunExistsError(f"{run_dir} already holds a run; remove it or choose another --workdir")
    partial = run_dir.with_name(f".{run_dir.name}.importing")
    shutil.rmtree(partial, ignore_errors=True)  # what an earlier, killed import left
    _write_run_files(partial, json.loads(config.to_json_best_effort()), example)
    checkpoint.save_variables(partial / IMPORTED, variables)
    extra_files(partial)
    if run_dir.exists():
        run_dir.rmdir()
    partial.rename(run_dir)


def trained_step(run_dir: str | pathlib.Path) -> int | None:
    """The step of a run's latest checkpoint; 0 for imported weights; None if it has neither."""
    run_dir = pathlib.Path(run_dir)
    if (run_dir / IMPORTED).exists():
        return 0
    return checkpoint.latest_step(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else None


def load_variables(config, run_dir: str | pathlib.Path, task: Task, *, mesh: jax.sharding.Mesh | None = None) -> dict:
    """The variables (`{"params": ..., **model_state}`) of a run's latest checkpoint, sharded;
    `params` is the parameters' EMA when the run kept one (`optim.ema_decay > 0`). A run dir of
    imported weights gives those."""
    run_dir = pathlib.Path(run_dir)
    mesh = partitioning.make_mesh(config.mesh) if mesh is None else mesh
    optimizer = optim.make_optimizer(config.optim, config.train.steps)
    example = saved_example(config, run_dir, task)
    _, _, abstract = sharded_state_layout(config, task, optimizer, example, mesh)
    if (run_dir / IMPORTED).exists():
        with _naming_config_changes(run_dir, config):
            return checkpoint.restore_variables(run_dir / IMPORTED, {"params": abstract.params, **abstract.model_state})
    checkpointer = checkpoint.Checkpointer(run_dir / "checkpoints", save_every=1, keep=None, async_save=False)
    try:
        with _naming_config_changes(run_dir, config):
            state, _, _ = checkpointer.restore(abstract)
    finally:
        checkpointer.close()
    averaged = optim.averaged_params(state.opt_state)
    return {"params": state.params if averaged is None else averaged, **state.model_state}


def make_step_fn(task: Task, optimizer, mesh: jax.sharding.Mesh, rules, state_shardings, microbatches: int = 1):
    """`train_step` jit-compiled with explicit shardings and the task's `compiler_options`; the step's
    key comes from the state."""

    def step(state: TrainState, batch: dict):
        with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return train_step(state, batch, step_rng(state), loss_fn=task.loss_fn, optimizer=optimizer,
                              microbatches=microbatches)

    return jax.jit(step, in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
                   out_shardings=(state_shardings, partitioning.replicated(mesh)), donate_argnums=0,
                   compiler_options=getattr(task, "compiler_options", None))


def check_microbatches(config, mesh: jax.sharding.Mesh) -> int:
    """`train.microbatches`, once it is known to split each batch into slices that split over the
    mesh's batch axes (`data × fsdp`) evenly."""
    microbatches, batch_size = config.train.get("microbatches", 1), config.train.batch_size
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % (microbatches * shards):
        raise ValueError(f"train.batch_size={batch_size} does not split into train.microbatches={microbatches} "
                         f"slices of a multiple of {shards} (the mesh's data × fsdp devices)")
    return microbatches


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, task: Task, *, resume: bool = False,
          stop_at_step: int | None = None, mesh: jax.sharding.Mesh | None = None) -> TrainState:
    """Trains `task` for `config.train.steps` steps (or until `stop_at_step`) in `workdir`.

    Raises `RunExistsError` if `workdir` has checkpoints and not `resume`, `RunLockedError` if
    another process is training in it, `NonFiniteLossError` on a NaN/Inf loss, and
    `TrainingInterrupted` after saving on a stop signal.
    """
    workdir = pathlib.Path(workdir)
    if (workdir / IMPORTED).exists():
        raise RunExistsError(f"{workdir} holds imported weights ({workdir / IMPORTED}); training does not start from "
                             "them: choose another --workdir")
    with run_lock(workdir):
        return _train(config, workdir, task, resume=resume, stop_at_step=stop_at_step, mesh=mesh)


def _train(config, workdir: pathlib.Path, task: Task, *, resume: bool, stop_at_step: int | None,
           mesh: jax.sharding.Mesh | None) -> TrainState:
    total_steps = config.train.steps
    stop_at_step = total_steps if stop_at_step is None else min(stop_at_step, total_steps)
    mesh = partitioning.make_mesh(config.mesh) if mesh is None else mesh
    rules = partitioning.rules_from_config(config.sharding.rules)

    source = pipeline.load_sources(config.data)["train"]
    example = _example(task, source)  # first, in this thread: it computes what the task reads lazily (cached tokens)
    batches = pipeline.ShardedBatches(
        source, task.preprocess, global_batch_size=config.train.batch_size,
        sharding=partitioning.batch_sharding(mesh), seed=config.seed, worker_count=config.data.worker_count)
    optimizer = optim.make_optimizer(config.optim, total_steps)
    init, shardings, abstract = sharded_state_layout(config, task, optimizer, example, mesh)

    checkpointer = checkpoint.Checkpointer(workdir / "checkpoints", save_every=config.train.save_every,
                                           keep=config.train.keep_checkpoints)
    if checkpointer.latest_step() is None:
        state = init()
        params = starting_params(task, state.params, shardings.params)
        if params is not state.params:  # fine-tuning: the optimizer state (and any EMA) starts from these
            opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
            state = state.replace(params=params, opt_state=opt_state)
        start = 0
    elif resume:
        with _naming_config_changes(workdir, config):
            state, data_state, start = checkpointer.restore(abstract)
        batches.set_state(data_state)
        log.info("resumed from step %d", start)
    else:
        raise RunExistsError(f"{workdir} already holds checkpoints (latest step {checkpointer.latest_step()}); "
                             "pass --resume to continue, or choose another --workdir")

    config_json = json.loads(config.to_json_best_effort())
    _write_run_files(workdir, config_json, example)
    step_fn = make_step_fn(task, optimizer, mesh, rules, shardings, check_microbatches(config, mesh))
    flops_per_step = flops.step_flops(task, abstract, example, config.train.batch_size, mesh, rules)
    peak = config.train.get("peak_flops", 0.0) or flops.peak_flops(mesh.devices.flat[0].device_kind)
    schedule = optim.learning_rate_schedule(config.optim, total_steps)
    writer = MetricWriter(workdir)
    evaluate = periodic_evaluation(task, config)
    draw = periodic_pictures(task, config)
    progress = tqdm.tqdm(total=stop_at_step, initial=start, desc=f"train {task.name}", unit="step",
                         disable=jax.process_index() != 0 or not config.train.progress_bar, dynamic_ncols=True)

    def check(step: int, metrics: dict) -> dict:
        """Host copy of a step's metrics; raises on a non-finite loss."""
        host = jax.device_get(metrics)
        if not (np.isfinite(host["loss"]) and np.isfinite(host["grad_norm"])):
            latest = checkpointer.latest_step()
            raise NonFiniteLossError(
                f"loss is {float(host['loss'])} (gradient norm {float(host['grad_norm'])}) at step {step}; "
                f"training stopped. The last good checkpoint "
                f"({'none' if latest is None else f'step {latest}'}) in {checkpointer.directory} is untouched.")
        return host

    try:
        with _StopFlag() as stop:
            unchecked = None  # the previous step's metrics: checked one step late to keep the device busy
            tick, tick_step = time.perf_counter(), start
            for step in range(start + 1, stop_at_step + 1):
                state, metrics = step_fn(state, next(batches))
                if unchecked is not None:
                    check(*unchecked)
                unchecked = (step, metrics)
                progress.update(1)
                stopping = stop.due(step)
                final = step == stop_at_step or stopping
                eval_due = evaluate is not None and (step % config.train.eval_every == 0 or final)
                log_due = step % config.train.log_every == 0 or final or eval_due
                save_due = step % config.train.save_every == 0 or final
                draw_due = draw is not None and step % config.train.image_every == 0
                if not (log_due or save_due or draw_due):
                    continue
                host, unchecked = check(step, metrics), None  # never log or save past a non-finite loss
                if log_due:
                    now = time.perf_counter()
                    rate = (step - tick_step) / (now - tick)
                    host |= {"learning_rate": schedule(step - 1), "steps_per_sec": rate,
                             "perf/model_flops_per_sec": flops_per_step * rate}
                    if peak:  # model FLOPs against the mesh's dense peak
                        host["perf/mfu"] = flops_per_step * rate / (peak * mesh.devices.size)
                    tick, tick_step = now, step
                    if eval_due:
                        host |= evaluate(state)
                    try:
                        writer.write(step, host)
                    except OSError as error:
                        raise _write_failed("writing the metrics", workdir, error, _saved_step(checkpointer)) from error
                    progress.set_postfix(loss=f"{float(host['loss']):.4f}", refresh=False)
                if draw_due:
                    try:
                        writer.write_pictures(step, draw(state))
                    except OSError as error:
                        raise _write_failed("writing pictures", workdir, error, _saved_step(checkpointer)) from error
                if save_due:
                    checkpointer.save(step, state, batches.get_state(), config_json, force=final)
                if stopping:
                    checkpointer.wait()
                    raise TrainingInterrupted(step, checkpointer.directory)
        checkpointer.wait()
    except checkpoint.CheckpointSaveError as error:
        raise _write_failed("saving a checkpoint", checkpointer.directory, error.__cause__,
                            _saved_step(checkpointer)) from error
    finally:
        progress.close()
        _close_quietly(writer.close, checkpointer.wait, checkpointer.close)  # the error in flight is the one to tell
    return state


def _saved_step(checkpointer: checkpoint.Checkpointer) -> int | None:
    """The newest completely saved step (an unfinished save has a temporary name, which is not listed)."""
    return checkpoint.latest_step(checkpointer.directory)


def _close_quietly(*closers: Callable[[], Any]) -> None:
    """Calls each; a failure is logged, not raised (closing after a full disk fails too)."""
    for close in closers:
        try:
            close()
        except Exception as error:  # noqa: BLE001
            log.warning("while closing the run: %s", str(error).splitlines()[0] if str(error) else error)
