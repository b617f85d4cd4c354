"""A tiny DALL·E work dir trained once through the CLI, shared by the tests that read it."""

import fcntl
import shutil

import pytest

from tests.cli.runner import dalle_args, run


@pytest.fixture(scope="session")
def trained_dalle(tiny_data_dir, tmp_path_factory, worker_id):
    """A tiny DALL·E run (both tokenizers and the transformer), trained once through the CLI for
    the tests that read it, whichever xdist worker asks first (the others wait on a lock); each
    test works on a copy."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base  # this run's directory, above each worker's
    workdir = shared / "trained_dalle"
    with open(shared / "trained_dalle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "trained_dalle.done").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            for command in ("train-text-tokenizer", "train-image-tokenizer", "train"):
                run(command, *dalle_args(tiny_data_dir, workdir), "--config.train.image_every=4")  # pictures at the end
            (shared / "trained_dalle.done").touch()
    return workdir
