"""Parity against the PyTorch originals, live, at the released sizes (bench/weights_parity.py:
OpenAI's dall_e Encoder and Decoder and a ViT-B/32-sized `transformers.CLIPModel`, random
weights saved in the released layouts and converted with `run.py import-weights`), the
committed fixtures regenerated, and a Karlo snapshot of PyTorch pickles read. Needs the
[convert] extra: `make test-convert`."""

import sys

import numpy as np
from safetensors.numpy import load_file

import make_fixtures
from tests.weights import parity

sys.path.insert(0, str(make_fixtures.REPO / "bench"))
import weights_parity  # noqa: E402

# PyTorch's CPU kernels round differently from one CPU (and thread count) to another, so the floats
# it computes come back within float32 rounding of the committed ones, not bit for bit: a tenth of
# the parity tolerance after one forward pass (2e-7 to 1.1e-6 seen), the parity tolerance after the
# sampled pipeline, whose 54 steps carry the rounding along (3.3e-5 seen). Everything else (token
# ids, masks, uint8 images, the weights written) must be equal.
ONE_PASS_ROUNDING = parity.RTOL / 10
SAMPLED_ROUNDING = parity.RTOL


def assert_regenerated(fresh, committed, where: str) -> None:
    """The arrays written now against the committed ones, key by key (see `ONE_PASS_ROUNDING`)."""
    assert sorted(fresh) == sorted(committed), where
    for key in fresh:
        ours, theirs = np.asarray(fresh[key]), np.asarray(committed[key])
        if np.issubdtype(theirs.dtype, np.floating):
            assert ours.shape == theirs.shape, f"{where}: {key}"
            tolerance = SAMPLED_ROUNDING if key.startswith("pipeline_") else ONE_PASS_ROUNDING
            error = parity.relative_error(ours, theirs)
            assert error <= tolerance, f"{where}: {key} is {error:.2e} off, more than {tolerance:.0e}"
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{where}: {key}")


def test_the_committed_fixtures_are_what_the_pinned_script_writes(tmp_path):
    make_fixtures.check_pins()
    make_fixtures.write_dvae_fixture(tmp_path)
    make_fixtures.write_clip_fixture(tmp_path)
    for name in ("openai_dvae.npz", "clip_reference.npz"):
        with np.load(tmp_path / name) as fresh, np.load(parity.FIXTURES / name) as committed:
            assert_regenerated(fresh, committed, name)
    fresh, committed = (load_file(str(d / "clip_snapshot" / "model.safetensors")) for d in (tmp_path, parity.FIXTURES))
    assert fresh.keys() == committed.keys()
    for key in fresh:
        np.testing.assert_array_equal(fresh[key], committed[key], err_msg=key)


def test_released_size_dvae_from_its_pickles(tmp_path):
    result = weights_parity.dvae(tmp_path)
    assert result["codes_shape"] == [4, 32, 32]
    assert max(result["logits"], result["stats"], result["pixels"]) <= parity.RTOL, result
    assert result["codes_equal"] >= 0.999, result  # argmax ties at float precision aside


def test_vit_b32_sized_clip_from_a_transformers_snapshot(tmp_path):
    result = weights_parity.clip(tmp_path)
    assert result["token_rows_equal"] == 1.0, result
    assert max(result["image_embeds"], result["text_embeds"], result["logits_per_image"]) <= parity.RTOL, result
    for size in (448, 140):
        assert result[f"resize_{size}_pixel_error_255ths"]["mean"] < 1.0, result


def test_the_committed_karlo_fixture_is_what_the_pinned_script_writes(tmp_path):
    make_fixtures.check_pins()
    make_fixtures.write_karlo_fixture(tmp_path)
    with np.load(tmp_path / "karlo_reference.npz") as fresh, np.load(parity.FIXTURES / "karlo_reference.npz") as committed:
        assert_regenerated(fresh, committed, "karlo_reference.npz")
    for path in sorted((parity.FIXTURES / "karlo_snapshot").rglob("*.safetensors")):
        fresh = load_file(str(tmp_path / path.relative_to(parity.FIXTURES)))
        committed = load_file(str(path))
        assert fresh.keys() == committed.keys(), path
        for key in fresh:
            np.testing.assert_array_equal(fresh[key], committed[key], err_msg=f"{path}: {key}")


def test_a_karlo_component_saved_as_a_pytorch_pickle_loads_the_same(tmp_path):
    import shutil

    import jax
    import torch

    from dalle_jax.weights import karlo

    snapshot = tmp_path / "karlo"
    shutil.copytree(parity.FIXTURES / "karlo_snapshot", snapshot)
    weights = snapshot / "prior" / "diffusion_pytorch_model.safetensors"
    torch.save({k: torch.from_numpy(v) for k, v in load_file(str(weights)).items()}, weights.with_suffix(".bin"))
    weights.unlink()
    from_pickle, from_safetensors = karlo.load_prior(snapshot), karlo.load_prior(parity.FIXTURES / "karlo_snapshot")
    jax.tree.map(np.testing.assert_array_equal, from_pickle.params, from_safetensors.params)
