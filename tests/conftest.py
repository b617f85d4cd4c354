"""Shared fixtures: a tiny shapes data set and a tiny config, built once per test session."""

from __future__ import annotations

import os
import pathlib

# The suite is compile-bound: tiny models, hundreds of small XLA programs (an eager `init` is one per
# parameter). Unoptimised LLVM code generation compiles them about 2.5× faster. Set before JAX starts,
# and inherited by the `run.py` subprocesses of tests/cli/.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
# And the same programs are compiled again and again: by each test of a model, and by each `run.py`
# subprocess (train, then generate, then eval, each compiling its sampler anew). JAX's persistent
# compilation cache shares them between all of these processes, through one folder per checkout (git ignores
# it; `make clean` removes it). An entry is keyed by the program, the flags and JAX's version: an old one is
# unused, never wrong. A size limit is what makes JAX lock the folder, so two processes never read a half-written
# entry. Only programs that took 0.5 s or more to compile are kept: caching every one (thousands of tiny eager
# ones, each a locked lookup) made the suite slower, 23 min 21 s against 18 min 20 s; at 0.5 s the DALL·E 3 CLI
# test takes 95 s against 113 (alone, from an empty cache).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2 ** 30))

import pytest  # noqa: E402

from dalle_jax.config import load_config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(tiny_data_dir):
    """`configs/shapes_toy.py:tiny` reading the session's data directory (32 px, 256 train images)."""
    return load_config(str(REPO / "configs/shapes_toy.py:tiny"), {"data.data_dir": str(tiny_data_dir)})


@pytest.fixture(scope="session")
def tiny_sources(tiny_data_dir):
    from dalle_jax.data import pipeline

    config = load_config(str(REPO / "configs/shapes_toy.py:tiny"), {"data.data_dir": str(tiny_data_dir)})
    return pipeline.load_sources(config.data)

