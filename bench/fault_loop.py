"""kill -9 at random moments, resume, repeat; then compare with a run that was never killed.

  python bench/fault_loop.py                # at least 20 kills of the toy config's training (a few minutes)
  python bench/fault_loop.py --kills 50

`run.py train --resume` on the toy config (saving every 5 steps, asynchronously) is started, killed
with SIGKILL after a random delay, and started again, until training has finished and at least
`--kills` kills have happened. An uninterrupted run of the same config then trains in another work
dir. Prints JSON: the kills, how many landed while a checkpoint was being written (an orbax
temporary directory was there), the steps trained more than once, and whether the two runs'
final parameters, optimizer state and data-iterator position are bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _command(workdir: pathlib.Path, data_dir: pathlib.Path, steps: int) -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "train", "--config", "configs/shapes_toy.py:tiny",
            f"--config.data.data_dir={data_dir}", f"--config.train.steps={steps}", "--config.train.save_every=5",
            "--config.train.log_every=1", "--config.train.progress_bar=false", "--workdir", str(workdir), "--resume"]


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
    parser.add_argument("--min-delay", type=float, default=4.0, help="seconds after a start before the kill, at least "
                        "(starting takes about 7 s on 2 cores: earlier kills land before training)")
    parser.add_argument("--max-delay", type=float, default=14.0, help="seconds after a start before the kill, at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data_dir, killed_dir, straight_dir = tmp / "data", tmp / "killed", tmp / "straight"
        subprocess.run([sys.executable, str(REPO / "run.py"), "build-data", "--config", "configs/shapes_toy.py:tiny",
                        f"--config.data.data_dir={data_dir}"], check=True, capture_output=True, env=env)
        kills = kills_during_save = starts = 0
        tick = time.perf_counter()
        while True:
            starts += 1
            process = subprocess.Popen(_command(killed_dir, data_dir, args.steps), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=env)
            delay = rng.uniform(args.min_delay, args.max_delay) if kills < args.kills else None
            try:
                process.wait(timeout=delay)
                if process.returncode != 0:
                    raise RuntimeError(f"train exited with {process.returncode} after {kills} kills")
                break  # training finished
            except subprocess.TimeoutExpired:
                saving = any((killed_dir / "toy" / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
                process.kill()
                process.wait()
                kills += 1
                kills_during_save += saving
        seconds = time.perf_counter() - tick
        if kills < args.kills:
            raise SystemExit(f"training finished after {kills} kills; ask for more --steps")

        subprocess.run(_command(straight_dir, data_dir, args.steps), check=True, capture_output=True, env=env)
        rows = [json.loads(line)["step"] for line in (killed_dir / "toy" / "metrics.jsonl").read_text().splitlines()]
        killed_state, killed_data = _final_checkpoint(killed_dir / "toy")
        straight_state, straight_data = _final_checkpoint(straight_dir / "toy")
        report = {
            "kills": kills, "kills_while_a_checkpoint_was_being_written": kills_during_save, "starts": starts,
            "steps": args.steps, "steps_trained_again_after_a_kill": len(rows) - len(set(rows)),
            "parameters_and_optimizer_state_bitwise_equal": _bitwise_equal(killed_state, straight_state),
            "data_iterator_position_equal": killed_data == straight_data,
            "every_step_trained": sorted(set(rows)) == list(range(1, args.steps + 1)),
            "seconds_killed_run": round(seconds, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
