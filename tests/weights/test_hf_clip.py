"""OpenAI CLIP imported from a `transformers` snapshot against `transformers`' own outputs
(fixtures written by tests_convert/make_fixtures.py), and the errors a bad snapshot gives."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from dalle_jax.config import load_config
from dalle_jax.tasks.clip import TrainedClip
from dalle_jax.weights import hf_clip
from dalle_jax.weights.mapping import WeightsMismatchError
from tests.conftest import REPO
from tests.weights import parity

SNAPSHOT = parity.FIXTURES / "clip_snapshot"


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(parity.FIXTURES / "clip_reference.npz"))


@pytest.fixture(scope="module")
def config():
    return load_config(str(REPO / "configs/own_data_dalle.py:tiny"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory, config):
    workdir = tmp_path_factory.mktemp("imported_clip")
    hf_clip.import_weights(SNAPSHOT, workdir, config)
    return TrainedClip.load(workdir)


def test_the_snapshot_config_becomes_the_openai_architecture():
    model, length, vocab_size = hf_clip.model_settings(SNAPSHOT)
    hf = json.loads((SNAPSHOT / "config.json").read_text())
    assert (length, vocab_size) == (77, hf["text_config"]["vocab_size"])
    assert model["architecture"] == "openai" and model["activation"] == "quick_gelu" and model["norm_eps"] == 1e-5
    assert model["text_tower"]["embed_dim"] != model["vision_tower"]["embed_dim"]  # the towers' own widths
    assert (model["patch_size"], model["image_size"]) == (8, 32)


def test_embeddings_and_logits_match_transformers(imported, reference):
    assert imported.step == 0
    ours = parity.clip_outputs(imported, reference["images"], reference["token_ids"])
    for name in ("image_embeds", "text_embeds", "logits_per_image"):
        assert ours[name].shape == reference[name].shape
        assert parity.relative_error(ours[name], reference[name]) <= parity.RTOL, name


def test_the_imported_tokenizer_and_embedders_are_the_ones_later_stages_use(imported, reference):
    ids = imported.task.text_tokenizer.encode(parity.AWKWARD_TEXTS[:-1], 77)  # the last is truncated (a warning)
    np.testing.assert_array_equal(ids, reference["token_ids"][:-1])
    embed_images, embed_text = imported.embedders()
    assert parity.relative_error(embed_images(reference["images"]), reference["image_embeds"]) <= parity.RTOL
    assert parity.relative_error(embed_text(parity.AWKWARD_TEXTS[:3]), reference["text_embeds"][:3]) <= parity.RTOL


def test_preprocessing_matches_clip_where_no_resize_is_needed_and_nearly_where_one_is(imported, reference):
    """At the tower's size the pixels are CLIP's to float precision. Other sizes are resized
    bicubically in the graph (as the captioner's training needs), where CLIP resizes the uint8
    picture with Pillow: the pixels then differ by under 1/255 on average, and the embeddings by
    under 1% of their norm."""
    vision = imported.model.vision
    pixels = parity.clip_pixels(reference["images"], vision.image_size, vision.pixel_mean, vision.pixel_std)
    assert parity.relative_error(pixels, reference["pixel_values"]) <= parity.RTOL
    std = np.asarray(vision.pixel_std)[None, :, None, None]
    embed_images = imported.embedders()[0]
    for size in (64, 20):  # shrunk, enlarged
        images = reference[f"resize_{size}_images"]
        theirs = reference[f"resize_{size}_pixel_values"]
        ours = parity.clip_pixels(images, vision.image_size, vision.pixel_mean, vision.pixel_std)
        assert np.mean(np.abs(ours - theirs) * std) * 255 < 1.0, size
        from_their_pixels = _embed_pixel_values(imported, theirs.transpose(0, 2, 3, 1))
        assert np.linalg.norm(embed_images(images) - from_their_pixels) < 0.01, size


def _embed_pixel_values(trained_clip, pixel_values):
    """The image embedding of pixels `transformers` has already standardised."""
    as_is = trained_clip.model.vision.clone(pixel_mean=(0.0,) * 3, pixel_std=(1 / 255.0,) * 3)  # (x/255 - 0)·255
    features = as_is.apply({"params": trained_clip.params["vision"]}, pixel_values)
    embedding = np.asarray(features @ trained_clip.params["image_projection"]["kernel"])
    return embedding / np.linalg.norm(embedding, axis=-1, keepdims=True)


def test_a_snapshot_with_a_missing_or_mis_shaped_tensor_names_it(tmp_path, config):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(SNAPSHOT, snapshot)
    tensors = load_file(str(snapshot / "model.safetensors"))
    del tensors["vision_model.post_layernorm.weight"]
    tensors["text_model.encoder.layers.1.self_attn.q_proj.weight"] = np.zeros((5, 5), np.float32)
    save_file(tensors, str(snapshot / "model.safetensors"))
    with pytest.raises(WeightsMismatchError) as error:
        hf_clip.import_weights(snapshot, tmp_path / "run", config)
    message = str(error.value)
    assert f"{snapshot / 'model.safetensors'} does not fit the architecture (2 tensors)" in message
    assert "vision_model.post_layernorm.weight: missing" in message
    assert "text_model.encoder.layers.1.self_attn.q_proj.weight: shape (5, 5) does not fit" in message
    assert not (tmp_path / "run" / "clip").exists()  # nothing half-written


def test_a_snapshot_without_weights_config_or_tokenizer_says_which_file(tmp_path, config):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(SNAPSHOT, snapshot)
    (snapshot / "model.safetensors").rename(snapshot / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="model.safetensors not found .*pytorch_model.bin"):
        hf_clip.import_weights(snapshot, tmp_path / "run", config)
    (snapshot / "pytorch_model.bin").rename(snapshot / "model.safetensors")
    (snapshot / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no CLIP tokenizer in .*tokenizer.json, or vocab.json and merges.txt"):
        hf_clip.import_weights(snapshot, tmp_path / "run", config)
    (snapshot / "config.json").write_text('{"model_type": "siglip"}')
    with pytest.raises(ValueError, match="model_type is 'siglip', not 'clip'"):
        hf_clip.import_weights(snapshot, tmp_path / "run", config)
