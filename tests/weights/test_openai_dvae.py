"""OpenAI's dVAE in Flax against the `dall_e` package's outputs (fixtures written by
tests_convert/make_fixtures.py), its conversion's errors, and the imported run it becomes."""

import numpy as np
import pytest

from dalle_jax.config import load_config
from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
from dalle_jax.train import trainer
from dalle_jax.weights import openai_dvae
from dalle_jax.weights.mapping import WeightsMismatchError
from tests.conftest import REPO
from tests.weights import parity


@pytest.fixture(scope="module")
def fixture():
    return parity.read_dvae_fixture(parity.FIXTURES / "openai_dvae.npz")


def test_settings_are_read_off_the_tensor_shapes(fixture):
    tensors, settings, _ = fixture
    assert openai_dvae.settings_of(tensors) == {**settings, "kind": "openai_dvae", "dtype": "float32"}


def test_released_names_follow_the_state_dict():
    assert openai_dvae.released_name(("encoder", "input", "kernel")) == "encoder.blocks.input.w"
    assert (openai_dvae.released_name(("encoder", "group_2", "block_1", "conv_3", "bias"))
            == "encoder.blocks.group_2.block_1.res_path.conv_3.b")
    assert (openai_dvae.released_name(("decoder", "group_1", "block_2", "id_path", "kernel"))
            == "decoder.blocks.group_1.block_2.id_path.w")
    assert openai_dvae.released_name(("decoder", "input_kernel")) == "decoder.blocks.input.w"
    assert openai_dvae.released_name(("decoder", "output_conv", "bias")) == "decoder.blocks.output.conv.b"


def test_logits_codes_statistics_and_pixels_match_the_released_code(fixture):
    tensors, settings, reference = fixture
    ours = parity.dvae_outputs(openai_dvae.to_params(tensors, openai_dvae.settings_of(tensors)), settings,
                               reference["images"])
    for name in ("logits", "stats", "pixels"):
        assert ours[name].shape == reference[name].shape
        assert parity.relative_error(ours[name], reference[name]) <= parity.RTOL, name
    np.testing.assert_array_equal(ours["codes"], reference["codes"])


def test_a_missing_extra_or_mis_shaped_tensor_is_named(fixture):
    tensors, _, _ = fixture
    settings = openai_dvae.settings_of(tensors)
    broken = dict(tensors)
    del broken["encoder.blocks.group_3.block_1.res_path.conv_2.w"]
    broken["decoder.blocks.group_1.block_1.res_path.conv_4.b"] = np.zeros(7, np.float32)
    broken["encoder.blocks.extra.w"] = np.zeros((2, 2), np.float32)
    with pytest.raises(WeightsMismatchError) as error:
        openai_dvae.to_params(broken, settings)
    message = str(error.value)
    assert "encoder.pkl/decoder.pkl does not fit the architecture (3 tensors)" in message
    assert "encoder.blocks.group_3.block_1.res_path.conv_2.w: missing" in message
    assert "decoder.blocks.group_1.block_1.res_path.conv_4.b: shape (7,) does not fit" in message
    assert "encoder.blocks.extra.w: shape (2, 2), not part of the architecture" in message
    with pytest.raises(WeightsMismatchError, match="encoder.pkl has no tensor 'blocks.input.w'"):
        openai_dvae.settings_of({k: v for k, v in tensors.items() if k != "encoder.blocks.input.w"})


def test_reading_pickles_without_the_files_or_pytorch_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.pkl.*decoder.pkl not found"):
        openai_dvae.read_released(tmp_path)
    for part in openai_dvae.PARTS:
        (tmp_path / f"{part}.pkl").write_bytes(b"")
    try:
        import dall_e  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install -e '.\[convert\]'"):
            openai_dvae.read_released(tmp_path)


def test_an_imported_run_loads_like_a_trained_one_and_is_never_overwritten(fixture, tmp_path):
    tensors, settings, reference = fixture
    config = load_config(str(REPO / "configs/own_data_dalle.py:tiny"), {"image_tokenizer.kind": "openai_dvae"})
    openai_dvae.import_tensors(tensors, tmp_path, config)
    run_dir = tmp_path / "image_tokenizer"
    assert trainer.trained_step(run_dir) == 0
    run_config = trainer.run_config(run_dir)
    task = ImageTokenizerTask.from_config(run_config)
    variables = trainer.load_variables(run_config, run_dir, task)
    codes = task.model.apply(variables, reference["images"], method="encode")
    np.testing.assert_array_equal(np.asarray(codes), reference["codes"])
    decoded = np.asarray(task.model.apply(variables, codes, method="decode"))
    np.testing.assert_allclose(decoded, np.round(reference["pixels"] * 255), atol=1)

    with pytest.raises(trainer.RunExistsError, match="already holds a run"):
        openai_dvae.import_tensors(tensors, tmp_path, config)
    with pytest.raises(trainer.RunExistsError, match="holds imported weights"):
        trainer.train(run_config, run_dir, task)
