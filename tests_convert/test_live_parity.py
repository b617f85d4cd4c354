"""Parity against the PyTorch originals, live, at the released sizes (bench/weights_parity.py:
OpenAI's dall_e Encoder and Decoder and a ViT-B/32-sized `transformers.CLIPModel`, random
weights saved in the released layouts and converted with `run.py import-weights`), and the
committed fixtures regenerated. Needs the [convert] extra: `make test-convert`."""

import sys

import numpy as np
from safetensors.numpy import load_file

import make_fixtures
from tests.weights import parity

sys.path.insert(0, str(make_fixtures.REPO / "bench"))
import weights_parity  # noqa: E402


def test_the_committed_fixtures_are_what_the_pinned_script_writes(tmp_path):
    make_fixtures.check_pins()
    make_fixtures.write_dvae_fixture(tmp_path)
    make_fixtures.write_clip_fixture(tmp_path)
    for name in ("openai_dvae.npz", "clip_reference.npz"):
        with np.load(tmp_path / name) as fresh, np.load(parity.FIXTURES / name) as committed:
            assert sorted(fresh.files) == sorted(committed.files)
            for key in fresh.files:
                np.testing.assert_array_equal(fresh[key], committed[key], err_msg=f"{name}: {key}")
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
