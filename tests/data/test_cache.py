import numpy as np
import pytest

from dalle_jax.data import cache


def test_rows_are_computed_once_in_chunks_and_a_stopped_run_resumes(tmp_path):
    calls = []

    def compute(begin, end):
        calls.append((begin, end))
        if len(calls) == 3 and not hasattr(compute, "stopped"):
            compute.stopped = True
            raise KeyboardInterrupt  # stopped in the middle of the third chunk
        return np.arange(begin, end)[:, None] * np.ones((1, 2), np.int32)

    path = tmp_path / "tokens.npy"
    with pytest.raises(KeyboardInterrupt):
        cache.cached_rows(path, 10, compute, chunk_size=3)
    assert not path.exists() and calls == [(0, 3), (3, 6), (6, 9)]
    array = cache.cached_rows(path, 10, compute, chunk_size=3)
    assert calls[3:] == [(6, 9), (9, 10)]  # only what was missing
    np.testing.assert_array_equal(array, np.arange(10)[:, None] * np.ones((1, 2)))
    np.testing.assert_array_equal(np.load(path), array)
    assert not (tmp_path / "tokens.parts").exists()
    calls.clear()
    np.testing.assert_array_equal(cache.cached_rows(path, 10, compute, chunk_size=3), array)
    assert calls == []  # read from disk


def test_processes_split_the_chunks_between_them():
    begins = list(range(0, 100, 10))
    shares = [cache.chunks_of_process(begins, p, 3) for p in range(3)]
    assert sorted(sum(shares, [])) == begins and all(len(s) in (3, 4) for s in shares)
