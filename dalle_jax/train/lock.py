"""One writer per run directory.

`run_lock(DIR)` holds an exclusive `flock` on `DIR/.lock` while a training writes there, and
writes the holder's pid, host and start time into it. The kernel drops the lock when its
process ends, however it ends (`kill -9` included), so a lock left by a killed run is taken
over by the next one (which logs whose it was); a second live writer is refused at once,
naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import time

import jax

log = logging.getLogger(__name__)
LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another live process is training in the same run directory."""


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_lock(directory: str | pathlib.Path):
    """Holds `directory/.lock` for the block (process 0 of a multi-host run holds it for all).
    Raises `RunLockedError` naming the holder if another live process has it."""
    if jax.process_index() != 0:
        yield
        return
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise RunLockedError(
                f"{directory} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} (since "
                f"{holder.get('started', '?')}): one training writes a run directory at a time. Wait for it or stop "
                f"it; the lock ({path}) goes when its process does") from None
        previous = _holder(fd)
        if previous:
            log.info("%s: taking over the lock of process %s on %s, which has ended", directory, previous.get("pid"),
                     previous.get("host"))
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # ended cleanly: nothing to take over
    finally:
        os.close(fd)  # releases the flock
