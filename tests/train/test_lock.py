"""One writer per run directory: a second live writer is refused naming the holder; the lock of
a killed one is taken over."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dalle_jax.train.lock import LOCK, RunLockedError, run_lock
from tests.conftest import REPO

HOLD = """
import sys, time
from dalle_jax.train.lock import run_lock
with run_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


def _holder(directory):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_writer_is_refused_and_a_killed_writers_lock_taken_over(tmp_path, caplog):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} on {socket.gethostname()}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the lock file still names it
        holder.wait()
    assert str(holder.pid) in (tmp_path / LOCK).read_text()
    with caplog.at_level("INFO", logger="dalle_jax.train.lock"), run_lock(tmp_path):
        assert str(os.getpid()) in (tmp_path / LOCK).read_text()
    assert f"taking over the lock of process {holder.pid}" in caplog.text
    assert (tmp_path / LOCK).read_text() == ""  # released cleanly: nothing left to take over
    with run_lock(tmp_path):  # and again at once
        time.sleep(0)
