"""`run.py` run as a user runs it, in a subprocess: the helper every CLI test calls."""

import os
import subprocess
import sys

from tests.conftest import REPO


def run(*args, check=True):
    """`python run.py ARGS` on the CPU from the repository root; asserts it succeeded unless `check` is false."""
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(REPO / "run.py"), *args], capture_output=True, text=True, env=env,
                            timeout=600, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def dalle_args(data_dir, workdir):
    """The tiny DALL·E config over `data_dir`, writing to `workdir`, without progress bars."""
    return ["--config", "configs/shapes_dalle.py:tiny", f"--config.data.data_dir={data_dir}",
            "--workdir", str(workdir), "--config.train.progress_bar=false"]
