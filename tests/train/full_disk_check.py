"""Run in a subprocess (see test_trainer.py): trains the toy task, saving every 2 steps, and once
step 4 is saved caps the size a file may grow to (RLIMIT_FSIZE, with SIGXFSZ ignored so that a
write fails instead of killing the process), as a full disk refuses writes. Prints the error
training stopped with and exits 3. Its output must go to pipes: files would be capped too."""

import dataclasses
import os
import resource
import signal
import sys

from dalle_jax.config import load_config
from dalle_jax.tasks.toy import ToyTask
from dalle_jax.train import trainer


@dataclasses.dataclass(frozen=True)
class _DiskFillsUp(ToyTask):
    """The toy task that fills the disk (for every write that grows a file past `limit` bytes)
    once the file `after` exists."""

    after: str = ""
    limit: int = 0

    def preprocess(self, example, rng):
        if os.path.exists(self.after):
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return super().preprocess(example, rng)


def main(config_path, data_dir, workdir):
    config = load_config(config_path, {"data.data_dir": data_dir, "train.progress_bar": False, "train.steps": 12,
                                       "train.save_every": 2, "train.log_every": 4})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
    toy = ToyTask.from_config(config)
    task = _DiskFillsUp(toy.model, after=f"{workdir}/checkpoints/4/commit_success.txt", limit=1500)
    try:
        trainer.train(config, workdir, task)
    except trainer.WriteFailedError as error:
        print(error)
        sys.exit(3)


if __name__ == "__main__":
    main(*sys.argv[1:])
