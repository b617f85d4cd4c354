"""Shared fixtures: a tiny shapes data set and a tiny config, built once per test session."""

from __future__ import annotations

import pathlib

import pytest

from dalle_jax.config import load_config

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
