"""Karlo's unCLIP loaded from a diffusers snapshot against diffusers' and transformers' own
outputs (a small random snapshot and its reference outputs, written by
tests_convert/make_fixtures.py): each component, then the whole pipeline replaying diffusers'
noise draw for draw, and the errors a snapshot this loader cannot read gives."""

import json
import shutil
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.diffusion import schedules
from dalle_jax.models.pixels import to_uint8, to_unit_range
from dalle_jax.nn.unet import TimestepMLP
from dalle_jax.pipelines.karlo import Karlo, StageSampling
from dalle_jax.weights import karlo
from dalle_jax.weights.mapping import WeightsMismatchError
from tests.weights import parity

SNAPSHOT = parity.FIXTURES / "karlo_snapshot"


def nhwc(images):
    return np.transpose(images, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(parity.FIXTURES / "karlo_reference.npz"))


@pytest.fixture(scope="module")
def pipeline():
    return Karlo.load(SNAPSHOT)


def test_text_encoder_and_tokenizer_match_transformers(pipeline, reference):
    prompts = json.loads(str(reference["prompts"]))
    tokens = pipeline.tokenizer.encode(prompts + [""], 77)
    np.testing.assert_array_equal(tokens, reference["token_ids"])
    text = pipeline.encode_text(prompts + [""])
    np.testing.assert_array_equal(text.mask, reference["text_mask"])
    assert parity.relative_error(text.embeddings, reference["text_embeds"]) <= parity.RTOL
    mask = reference["text_mask"][..., None]  # past the end of text the tokenizers pad differently; both are masked
    assert parity.relative_error(np.where(mask, text.hidden, 0), np.where(mask, reference["text_hidden"], 0)) \
        <= parity.RTOL


def test_each_model_matches_diffusers(pipeline, reference):
    modules, params, batch = pipeline.modules, pipeline.params, 2
    text = [jnp.asarray(reference[k][:batch]) for k in ("text_embeds", "text_hidden", "text_mask")]
    prior = modules["prior"].apply({"params": params["prior"]}, jnp.asarray(reference["prior_latents"]),
                                   jnp.asarray(reference["prior_timesteps"]), *text)
    assert parity.relative_error(prior, reference["prior_output"]) <= parity.RTOL
    decoder = modules["decoder"].apply({"params": params["decoder"]}, jnp.asarray(nhwc(reference["decoder_x"])),
                                       jnp.asarray(reference["decoder_t"]),
                                       jnp.asarray(reference["text_proj_image_embeddings"]), *text)
    assert decoder.shape == (batch, 16, 16, 6)  # ε and the variance's v
    assert parity.relative_error(decoder, nhwc(reference["decoder_output"])) <= parity.RTOL
    for name in ("super_res_first", "super_res_last"):  # the UNet alone: the reference was given both halves
        module = modules[name]
        embedding = TimestepMLP(module.embed_dim).apply({"params": params[name]["TimestepMLP_0"]},
                                                        jnp.asarray(reference["super_res_t"]))
        out = module.unet.apply({"params": params[name]["unet"]}, jnp.asarray(nhwc(reference["super_res_x"])),
                                embedding)
        assert parity.relative_error(out, nhwc(reference[f"{name}_output"])) <= parity.RTOL, name


def _diffusers_final_scale() -> float:
    """diffusers' last step multiplies x̂₀ by β₀ / (1 - ᾱ₀) computed in float32 (ᾱ₀ = 1 - β₀
    rounded), 0.99947 rather than 1; this project takes x̂₀ as it is."""
    beta = np.float32(1 - schedules.cosine_alphas_cumprod(1000)[0])
    return float(beta / (np.float32(1) - (np.float32(1) - beta)))


def test_the_pipeline_replays_diffusers_draw_for_draw(pipeline, reference):
    """Each stage from diffusers' initial latents and per-step noise (25 prior, 25 decoder and 7
    super-resolution steps, guidance 4 and 8), given the previous stage's reference output."""
    prompts = json.loads(str(reference["prompts"]))
    text, null = pipeline.encode_text(prompts), pipeline.encode_text([""])
    steps = dict(zip(("prior", "decoder", "super_res"), reference["pipeline_steps"].tolist()))
    assert steps == {"prior": 25, "decoder": 25, "super_res": 7} and pipeline.image_sizes == (16, 32)
    replay = lambda name, layout=lambda a: a: jnp.asarray(np.concatenate([  # no draw on the final step
        layout(reference[f"pipeline_{name}_noise"]), np.zeros_like(layout(reference[f"pipeline_{name}_noise"][:1]))]))
    images_layout = lambda a: np.transpose(a, (0, 1, 3, 4, 2))
    key, scale = jax.random.key(0), _diffusers_final_scale()

    embeddings = pipeline.image_embeddings(text, null, key, StageSampling(25, 4.0),
                                           noise=reference["pipeline_prior_latents"], step_noise=replay("prior"))
    mean, std = pipeline.prior_statistics
    expected = reference["pipeline_image_embeddings"]
    assert parity.relative_error(embeddings, expected) <= 1e-3
    assert parity.relative_error((embeddings - mean) * scale + mean, expected) <= parity.RTOL

    small = pipeline.decode(jnp.asarray(expected), text, null, key, StageSampling(25, 8.0), size=16,
                            noise=nhwc(reference["pipeline_decoder_latents"]),
                            step_noise=replay("decoder", images_layout))
    expected = nhwc(reference["pipeline_decoder_images"])
    assert parity.relative_error(small, expected) <= 1e-3
    assert parity.relative_error(small * scale, expected) <= parity.RTOL

    large = pipeline.super_resolve(jnp.asarray(expected), key, StageSampling(7), size=32,
                                   noise=nhwc(reference["pipeline_super_res_latents"]),
                                   step_noise=replay("super_res", images_layout))
    expected = reference["pipeline_images"]  # diffusers' output: [0, 1]
    assert parity.relative_error(large * 0.5 + 0.5, expected) <= 1e-3
    assert parity.relative_error(np.clip(large * scale * 0.5 + 0.5, 0, 1), expected) <= parity.RTOL


def test_the_schedulers_become_stage_schedules():
    assert karlo.load_schedule(SNAPSHOT, "prior_scheduler") == karlo.StageSchedule(1000, "x0", 5.0, False)
    assert karlo.load_schedule(SNAPSHOT, "decoder_scheduler") == karlo.StageSchedule(1000, "epsilon", 1.0, True)
    assert karlo.load_schedule(SNAPSHOT, "super_res_scheduler") == karlo.StageSchedule(1000, "epsilon", 1.0, False)


@pytest.fixture
def snapshot_copy(tmp_path):
    copy = tmp_path / "karlo"
    shutil.copytree(SNAPSHOT, copy)
    return copy


def _edit_config(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_missing_component_names_what_a_snapshot_holds(snapshot_copy):
    shutil.rmtree(snapshot_copy / "super_res_last")
    with pytest.raises(FileNotFoundError, match=r"super_res_last/config.json not found: a Karlo snapshot"):
        Karlo.load(snapshot_copy)


def test_an_unsupported_option_names_the_file_and_key(snapshot_copy):
    _edit_config(snapshot_copy / "prior" / "config.json", norm_in_type="layer")
    with pytest.raises(ValueError, match=r"prior/config.json: norm_in_type = 'layer' is not supported"):
        karlo.load_prior(snapshot_copy)
    _edit_config(snapshot_copy / "decoder" / "config.json", down_block_types=["CrossAttnDownBlock2D"] * 3)
    with pytest.raises(ValueError, match=r"decoder/config.json: block types .* are not Karlo's"):
        karlo.load_decoder(snapshot_copy)
    _edit_config(snapshot_copy / "super_res_scheduler" / "scheduler_config.json", beta_schedule="linear")
    with pytest.raises(ValueError, match="beta_schedule = 'linear' is not supported"):
        karlo.load_schedule(snapshot_copy, "super_res_scheduler")


def test_weights_that_do_not_fit_are_listed(snapshot_copy):
    from safetensors.numpy import load_file, save_file

    path = snapshot_copy / "super_res_first" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(path))
    del tensors["conv_in.weight"]
    tensors["conv_out.bias"] = np.zeros((4,), np.float32)
    save_file(tensors, str(path))
    with pytest.raises(WeightsMismatchError) as error:
        karlo.load_super_res(snapshot_copy, "super_res_first")
    message = str(error.value)
    assert "conv_in.weight: missing" in message and "conv_out.bias: shape (4,) does not fit" in message
    assert str(path) in message


def test_the_image_encoder_matches_transformers(pipeline, reference):
    """The image-variation snapshot's encoder, on images at its size (the processor only standardises them)."""
    from dalle_jax.pipelines.karlo import _encode

    embeddings = _encode(pipeline.modules["image_encoder"], pipeline.params["image_encoder"],
                         jnp.asarray(reference["variation_images"]))
    assert pipeline.image_encoder_size == 32
    assert parity.relative_error(embeddings, reference["variation_image_embeds"]) <= parity.RTOL


def test_commands_sample_a_snapshot_with_no_work_dir(tmp_path):
    from PIL import Image

    from tests.cli.runner import run

    fast = ["--weights", str(SNAPSHOT), "--config.karlo.prior.num_steps=3", "--config.karlo.decoder.num_steps=3",
            "--config.karlo.super_res.num_steps=2"]
    out = tmp_path / "samples.png"
    run("unclip-generate", *fast, "--prompt", "a red boat", "--prompt", "a blue car", "--num-samples", "2",
        "--config.karlo.batch_size=3", "--config.karlo.candidates=2", "--out", str(out))  # the best of 2 by CLIP
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape[1] >= 2 * 32 and grid.shape[0] >= 2 * 32  # two prompts by two samples of 32 px
    source = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(source)
    out = tmp_path / "variations.png"
    run("variations", *fast, "--image", str(source), "--num-samples", "2", "--out", str(out),
        "--config.karlo.decoder.sampler=ddim", "--config.karlo.decoder.guidance_interval=(0.0, 0.7)")  # ε alone
    assert Image.open(out).size[0] >= 3 * 32  # the original and two variations
    refused = run("unclip-generate", "--weights", str(tmp_path), "--prompt", "a red boat", check=False)
    assert refused.returncode != 0 and "no model_index.json there" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_variations_and_reranking_need_the_image_variation_snapshot(snapshot_copy):
    shutil.rmtree(snapshot_copy / "image_encoder")
    text_to_image = Karlo.load(snapshot_copy)
    with pytest.raises(FileNotFoundError, match="image-variation snapshot"):
        text_to_image.variations(np.zeros((32, 32, 3), np.uint8), 1, jax.random.key(0))
    with pytest.raises(FileNotFoundError, match=r"reranking draws by CLIP \(karlo.candidates > 1\)"):
        text_to_image.generate(["a red boat"], jax.random.key(0), candidates=2)
    assert "image_encoder" in Karlo.load(snapshot_copy, image_encoder_snapshot=SNAPSHOT).modules


def test_candidates_keep_the_draw_clip_puts_nearest_the_prompt(pipeline):
    """Each prompt's image is the super-resolved decoder draw of highest cosine between CLIP's unit
    embeddings, computed here by hand from the encoders' outputs."""
    sampling = {"prior": StageSampling(2, 4.0), "decoder": StageSampling(2, 8.0), "super_res": StageSampling(2)}
    prompts, candidates, rng = ["a red boat", "a blue car"], 3, jax.random.key(5)
    images = pipeline.generate(prompts, rng, sampling, candidates=candidates)
    chex.assert_shape(images, (2, 32, 32, 3))

    repeated = [prompt for prompt in prompts for _ in range(candidates)]
    text, null = pipeline.encode_text(repeated), pipeline.encode_text([""])
    prior_key, decoder_key, super_res_key = jax.random.split(rng, 3)
    embeddings = pipeline.image_embeddings(text, null, prior_key, sampling["prior"])
    small = np.asarray(to_uint8(pipeline.decode(embeddings, text, null, decoder_key, sampling["decoder"], size=16)))
    encoder, params = pipeline.modules["image_encoder"], pipeline.params["image_encoder"]
    image_embeddings = np.asarray(encoder.apply({"params": params}, small))
    cosine = np.sum(image_embeddings * np.asarray(text.embeddings), axis=-1) / (
        np.linalg.norm(image_embeddings, axis=-1) * np.linalg.norm(text.embeddings, axis=-1))
    best = small.reshape(2, candidates, 16, 16, 3)[np.arange(2), cosine.reshape(2, candidates).argmax(axis=1)]
    expected = pipeline.super_resolve(to_unit_range(jnp.asarray(best)), super_res_key, sampling["super_res"], size=32)
    np.testing.assert_array_equal(images, np.asarray(to_uint8(expected)))


def test_a_snapshot_of_pytorch_pickles_needs_pytorch(snapshot_copy, monkeypatch):
    """What a user without PyTorch sees (tests_convert/ reads the pickles with it)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    weights = snapshot_copy / "prior" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(FileNotFoundError, match=r"has only diffusion_pytorch_model.bin, a PyTorch pickle"):
        karlo.load_prior(snapshot_copy)


def test_bfloat16_loading_keeps_every_parameter_in_bfloat16(pipeline, reference):
    """Each component cast as it loads (`karlo.dtype`: bfloat16 halves the memory) and computing in
    bfloat16: the prior and decoder give float32's outputs to bfloat16's precision."""
    half = Karlo.load(SNAPSHOT, jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(half.params)} == {jnp.dtype(jnp.bfloat16)}
    text = [jnp.asarray(reference[k][:2]) for k in ("text_embeds", "text_hidden", "text_mask")]
    inputs = {"prior": (jnp.asarray(reference["prior_latents"]), jnp.asarray(reference["prior_timesteps"]), *text),
              "decoder": (jnp.asarray(nhwc(reference["decoder_x"])), jnp.asarray(reference["decoder_t"]),
                          jnp.asarray(reference["text_proj_image_embeddings"]), *text)}
    for name, args in inputs.items():
        ours = half.modules[name].apply({"params": half.params[name]}, *args)
        full = pipeline.modules[name].apply({"params": pipeline.params[name]}, *args)
        assert 1e-4 < parity.relative_error(ours, full) < 3e-2, name  # bfloat16 computed, and close
