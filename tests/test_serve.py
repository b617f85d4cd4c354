"""The web page's request checks (`dalle_jax/serve.py`); tests_browser/ drives the page itself."""

import pathlib

import chex
import pytest

from dalle_jax import serve
from tests.data import own_data


@pytest.mark.parametrize("prompt,message", [
    ("", "Type a prompt first."), ("   \n", "Type a prompt first."), (None, "Type a prompt first."),
    ("x" * 10_000, "The prompt has 10,000 characters; at most 1,000 are read."),
])
def test_empty_and_overlong_prompts_are_refused(prompt, message):
    with pytest.raises(serve.InputError, match=message):
        serve.check_prompt(prompt)


def test_a_prompt_is_stripped_and_any_text_otherwise_passes():
    assert serve.check_prompt("  a small red circle 🙂 מעגל\x00 ") == "a small red circle 🙂 מעגל\x00"


@pytest.mark.parametrize("value,ok", [(1, True), (16, True), (4.0, True), (0, False), (17, False), (2.5, False),
                                      ("many", False), (None, False)])
def test_counts_are_whole_numbers_in_range(value, ok):
    if ok:
        assert serve.check_count(value, "Samples", 1, 16) == int(value)
    else:
        with pytest.raises(serve.InputError, match="Samples must be a whole number"):
            serve.check_count(value, "Samples", 1, 16)


def test_uploads_become_the_models_square_or_are_refused(tmp_path):
    for name, (data, _, _) in own_data.good_images().items():
        (tmp_path / name).write_bytes(data)
        chex.assert_shape(serve.read_upload(str(tmp_path / name), 32, 89_478_485), (32, 32, 3))
    for name, (data, reason) in own_data.bad_images().items():
        if reason == "too_small":
            continue  # an upload is upscaled, as an --image is
        (tmp_path / name).write_bytes(data)
        with pytest.raises(serve.InputError, match=f"That file cannot be used as an image: {reason}"):
            serve.read_upload(str(tmp_path / name), 32, 89_478_485)
    with pytest.raises(serve.InputError, match="Upload an image first."):
        serve.read_upload(None, 32, 89_478_485)


def test_only_the_models_present_are_offered(tmp_path):
    assert serve.Models(pathlib.Path(tmp_path)).offered() == []
