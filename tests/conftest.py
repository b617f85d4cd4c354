"""Shared fixtures: a tiny shapes data set and a tiny config, built once per test session."""

from __future__ import annotations

import os
import pathlib

# The suite is compile-bound: tiny models, hundreds of small XLA programs (an eager `init` is one per
# parameter). Unoptimised LLVM code generation compiles them about 2.5× faster. Set before JAX starts,
# and inherited by the `run.py` subprocesses of test_cli.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

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

