"""Two processes on this CPU (`jax.distributed`, gloo collectives), two devices each, train the tiny
DALL·E through `run.py --distributed` as a user starts them by hand (docs/performance.md)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO

STEPS = 16
TRAIN = ["--config", f"{REPO / 'configs/shapes_dalle.py'}:tiny", f"--config.train.steps={STEPS}",
         "--config.train.log_every=1", "--config.train.save_every=100", "--config.train.progress_bar=false"]


def _env(devices: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")  # keeps the suite's -O0
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}")


def _run_py(*args, devices: int, log: pathlib.Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], env=_env(devices), stdout=out,
                                stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(workdir: pathlib.Path, data_dir, *extra: str, heartbeat: int = 100) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run, two fake devices each."""
    common = [*TRAIN, f"--config.data.data_dir={data_dir}", "--workdir", str(workdir), "--distributed",
              f"--coordinator=127.0.0.1:{_free_port()}", "--num_processes=2", f"--heartbeat_timeout={heartbeat}", *extra]
    return [_run_py("train", *common, f"--process_id={i}", devices=2, log=workdir / f"process_{i}.log")
            for i in range(2)]


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "dalle" / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


def _wait_for_step(workdir: pathlib.Path, step: int, processes, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = workdir / "dalle" / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= step:
            return
        assert all(p.poll() is None for p in processes), "a process ended early"
        time.sleep(0.2)
    raise TimeoutError(f"no step {step} in {workdir} within {timeout} s")


@pytest.fixture(scope="module")
def tokenized(tiny_data_dir, tmp_path_factory) -> pathlib.Path:
    """A work dir with the tiny DALL·E's text and image tokenizers."""
    workdir = tmp_path_factory.mktemp("distributed") / "base"
    config = ["--config", f"{REPO / 'configs/shapes_dalle.py'}:tiny", f"--config.data.data_dir={tiny_data_dir}",
              "--workdir", str(workdir)]
    for command in ("train-text-tokenizer", "train-image-tokenizer"):
        subprocess.run([sys.executable, str(REPO / "run.py"), command, *config], env=_env(1), check=True,
                       capture_output=True, timeout=300)
    return workdir


def _copy(tokenized: pathlib.Path, name: str) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(tokenized, tokenized.with_name(name)))


@pytest.mark.scale
def test_two_processes_match_one_and_stop_and_resume_together(tokenized, tiny_data_dir):
    one = _copy(tokenized, "one_process")
    reference = _run_py("train", *TRAIN, f"--config.data.data_dir={tiny_data_dir}", "--workdir", str(one),
                        devices=4, log=one / "process.log")
    assert reference.wait(timeout=300) == 0, (one / "process.log").read_text()[-3000:]

    two = _copy(tokenized, "two_processes")
    pair = _start_pair(two, tiny_data_dir)
    _wait_for_step(two, 4, pair)
    for process in pair:
        process.send_signal(signal.SIGTERM)  # each gets its own, at a step of its own
    codes = [process.wait(timeout=120) for process in pair]
    logs = [(two / f"process_{i}.log").read_text() for i in range(2)]
    assert codes == [143, 143], logs[0][-3000:]
    saved = {int(log.split("interrupted: saved step ")[1].split()[0]) for log in logs}
    assert len(saved) == 1, saved  # both stopped after the same step
    stopped_at = saved.pop()
    assert 4 <= stopped_at < STEPS
    assert sorted(p.name for p in (two / "dalle" / "checkpoints").iterdir()) == [str(stopped_at)]  # one checkpoint

    resumed = _start_pair(two, tiny_data_dir, "--resume")
    assert [process.wait(timeout=300) for process in resumed] == [0, 0], (two / "process_0.log").read_text()[-3000:]
    for i in range(2):
        assert f"resumed from step {stopped_at}" in (two / f"process_{i}.log").read_text()
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_two) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses_two[s] for s in range(1, STEPS + 1)],
                               [losses_one[s] for s in range(1, STEPS + 1)], rtol=0, atol=1e-5)


def test_a_process_that_dies_stops_the_other_within_the_heartbeat_timeout(tokenized, tiny_data_dir):
    workdir = _copy(tokenized, "one_dies")
    pair = _start_pair(workdir, tiny_data_dir, f"--config.train.steps={100 * STEPS}", heartbeat=5)
    _wait_for_step(workdir, 3, pair)
    pair[1].kill()
    killed = time.monotonic()
    code = pair[0].wait(timeout=120)
    waited = time.monotonic() - killed
    assert code != 0
    assert waited < 30, waited  # the heartbeat timeout (5 s) and JAX's polling, not a hang
    # JAX's words (XLA's coordination service): "... detected fatal errors. This most likely indicates that
    # another task died"; one of its phrases, should a release reword the rest.
    assert re.search(r"another task died|stopped sending heartbeats", (workdir / "process_0.log").read_text())
