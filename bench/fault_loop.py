"""kill -9 at random moments, resume, repeat; then compare with a run that was never killed.

  python bench/fault_loop.py                # at least 20 kills of the toy config's training (about 4 minutes)
  python bench/fault_loop.py --kills 50
  python bench/fault_loop.py --kills 2 --steps 25 --during-saves   # the suite's short version

`run.py train --resume` on the toy config (saving every 5 steps, asynchronously) is started, killed
with SIGKILL at a random moment (once it has logged 1 to 15 new steps, then up to `--max-delay`
seconds later), and started again, until training has finished and at least `--kills` kills have happened (with
`--during-saves`, each kill waits until a checkpoint is in the middle of being written). An uninterrupted run of the same config then trains in another work
dir. Prints JSON: the kills, how many landed while a checkpoint was being written (an orbax
temporary directory was there), the steps trained more than once, whether every restart resumed
from the newest checkpoint that had finished saving when it was killed (never from a half-written
one), and whether the two runs' final parameters, optimizer state and data-iterator position are
bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAVE_EVERY = 5


def _command(workdir: pathlib.Path, data_dir: pathlib.Path, steps: int) -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "train", "--config", "configs/shapes_toy.py:tiny",
            f"--config.data.data_dir={data_dir}", f"--config.train.steps={steps}",
            f"--config.train.save_every={SAVE_EVERY}",            "--config.train.log_every=1", "--config.train.progress_bar=false", "--workdir", str(workdir), "--resume"]


def _saved_steps(checkpoints: pathlib.Path) -> list[int]:
    """The steps whose saves have finished: orbax writes under a temporary name and renames."""
    return sorted(int(d.name) for d in checkpoints.glob("*") if d.name.isdigit()) if checkpoints.exists() else []


def _saving(checkpoints: pathlib.Path) -> bool:
    return checkpoints.exists() and any(checkpoints.glob("*.orbax-checkpoint-tmp*"))


def _logged_steps(run_dir: pathlib.Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def _kill_when(process: subprocess.Popen, condition, timeout: float = 120.0) -> None:
    """Raises `TimeoutExpired` (as `Popen.wait` does: the caller kills) as soon as `condition()`
    holds while `process` runs; returns if it exits first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if condition() or time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(process.args, timeout)
        time.sleep(0.01)


def fault_loop(kills: int = 20, steps: int = 400, *, during_saves: bool = False, max_delay: float = 0.5,
               seed: int = 0) -> dict:
    """Trains the toy config with `kills` SIGKILLs and restarts, then once straight; the report."""
    rng = random.Random(seed)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data_dir, killed_dir, straight_dir = tmp / "data", tmp / "killed", tmp / "straight"
        checkpoints = killed_dir / "toy" / "checkpoints"
        newest = lambda: (_saved_steps(checkpoints) or [0])[-1]
        subprocess.run([sys.executable, str(REPO / "run.py"), "build-data", "--config", "configs/shapes_toy.py:tiny",
                        f"--config.data.data_dir={data_dir}"], check=True, capture_output=True, env=env)
        killed = killed_during_save = 0
        resumed, newest_saved = [], []  # per restart: the step it resumed from; the newest finished save then
        tick = time.perf_counter()
        while True:
            log_file = tmp / f"start{len(newest_saved)}.log"
            with log_file.open("w") as log:
                process = subprocess.Popen(_command(killed_dir, data_dir, steps), stdout=subprocess.DEVNULL,
                                           stderr=log, env=env)
                try:
                    if killed >= kills:
                        process.wait()
                    elif during_saves:  # once one or two more saves have finished, while the next is written
                        after_step = newest() + SAVE_EVERY * rng.randint(1, 2)
                        _kill_when(process, lambda: newest() >= after_step and _saving(checkpoints))
                    else:  # at a random moment of training: after 1 to 15 new steps, and up to max_delay seconds
                        target = _logged_steps(killed_dir / "toy") + rng.randint(1, 3 * SAVE_EVERY)
                        _kill_when(process, lambda: _logged_steps(killed_dir / "toy") >= target)
                        process.wait(timeout=rng.uniform(0, max_delay))
                    if process.returncode != 0:
                        raise RuntimeError(f"train exited with {process.returncode} after {killed} kills: "
                                           f"{log_file.read_text()[-2000:]}")
                except subprocess.TimeoutExpired:
                    saving = _saving(checkpoints)
                    process.kill()
                    process.wait()
                    killed += 1
                    killed_during_save += saving
            if newest_saved:
                found = re.search(r"resumed from step (\d+)", log_file.read_text())
                resumed.append(int(found.group(1)) if found else None)
            if process.returncode == 0:
                break  # training finished
            newest_saved.append((_saved_steps(checkpoints) or [None])[-1])
        seconds = time.perf_counter() - tick
        if killed < kills:
            raise RuntimeError(f"training finished after {killed} kills; ask for more steps")

        subprocess.run(_command(straight_dir, data_dir, steps), check=True, capture_output=True, env=env)
        rows = [json.loads(line)["step"] for line in (killed_dir / "toy" / "metrics.jsonl").read_text().splitlines()]
        killed_state, killed_data = _final_checkpoint(killed_dir / "toy")
        straight_state, straight_data = _final_checkpoint(straight_dir / "toy")
        return {
            "kills": killed, "kills_while_a_checkpoint_was_being_written": killed_during_save,
            "steps": steps, "steps_trained_again_after_a_kill": len(rows) - len(set(rows)),
            "resumed_from_steps": resumed,
            "every_restart_resumed_from_the_newest_finished_save": resumed == newest_saved,
            "parameters_and_optimizer_state_bitwise_equal": _bitwise_equal(killed_state, straight_state),
            "data_iterator_position_equal": killed_data == straight_data,
            "every_step_trained": sorted(set(rows)) == list(range(1, steps + 1)),
            "seconds_killed_run": round(seconds, 1),
        }


def _final_checkpoint(run_dir: pathlib.Path) -> tuple[dict, dict]:
    """(state arrays, data-iterator state) of a run's newest checkpoint, read as saved."""
    import orbax.checkpoint as ocp

    step_dir = max((d for d in (run_dir / "checkpoints").iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(step_dir / "state")
    return state, json.loads((step_dir / "data" / "metadata").read_text())  # where orbax's JSON handler writes


def _bitwise_equal(a, b) -> bool:
    import jax

    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                                  for x, y in zip(leaves_a, leaves_b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400, help="training steps (more leave room for more kills)")
    parser.add_argument("--during-saves", action="store_true", help="kill each start once a checkpoint is being "
                        "written, in place of after a random delay")
    parser.add_argument("--max-delay", type=float, default=0.5, help="the kill comes a random time up to this many "
                        "seconds after a start has logged a random number (1 to 15) of new steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(fault_loop(args.kills, args.steps, during_saves=args.during_saves,
                                max_delay=args.max_delay, seed=args.seed), indent=2))


if __name__ == "__main__":
    main()
