"""unCLIP's embedding manipulations (slerp and text diffs) and its cascade of upsamplers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.config import ConfigError, load_config
from dalle_jax.models.pixels import to_uint8
from dalle_jax.pipelines.unclip import Unclip, slerp, text_diff_embeddings
from dalle_jax.tasks.decoder import UpsamplerTask, cascade_sizes, unit_range
from tests.conftest import REPO
from tests.nn.test_unet import perturbed


def unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_slerp_endpoints_norms_and_constant_speed():
    a, b = unit(jax.random.normal(jax.random.key(0), (2, 8)))
    fractions = jnp.linspace(0, 1, 5)[:, None]
    path = slerp(a[None], b[None], fractions)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, atol=1e-5)
    angles = np.arccos(np.clip(np.asarray(path @ a), -1, 1))  # the angle from `a` grows linearly
    np.testing.assert_allclose(angles, angles[-1] * np.linspace(0, 1, 5), atol=1e-3)  # arccos near 1: float32


def test_slerp_of_parallel_vectors_is_that_vector():
    a = unit(jnp.arange(1.0, 5.0))
    np.testing.assert_allclose(slerp(a, a, 0.3), a, atol=1e-6)


def test_text_diff_rotates_towards_the_difference():
    image, before, after = unit(jax.random.normal(jax.random.key(1), (3, 8)))
    path = text_diff_embeddings(image, before, after, [0.0, 0.25, 0.5])
    np.testing.assert_allclose(path[0], image, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 1.0, atol=1e-5)
    direction = unit(after - before)
    assert float(path[1] @ direction) > float(path[0] @ direction)
    assert float(path[2] @ direction) > float(path[1] @ direction)


def cascade_config(**overrides):
    """shapes_unclip.py's tiny cascade: an 8×8 decoder, then 8 → 16 → 32."""
    return load_config(str(REPO / "configs/shapes_unclip.py:tiny_cascade"), overrides)


def test_the_cascade_chains_its_stages_and_refuses_a_broken_chain():
    assert cascade_sizes(cascade_config()) == {"first_upsampler": (8, 16), "upsampler": (16, 32)}
    assert cascade_sizes(load_config(str(REPO / "configs/shapes_unclip.py:tiny"))) == {"upsampler": (16, 32)}
    broken = [("decoder.image_size", 16, "decoder.image_size 16 must equal first_upsampler.low_res_size 8"),
              ("upsampler.low_res_size", 12, r"first_upsampler: its images \(12 px"),
              ("first_upsampler.crop_size", 5, "crop_size 5 a multiple of that factor"),
              ("upsamplers", ("first_upsampler", "second"), r"names \['second'\], which the config has no section"),
              ("upsamplers", (), "upsamplers is empty")]
    for key, value, message in broken:
        with pytest.raises(ConfigError, match=message):
            cascade_sizes(cascade_config(**{key: value}))
    with pytest.raises(ConfigError, match="stages 1 to 2"):
        UpsamplerTask.from_config(cascade_config(), stage=3)


def block_means(image, factor):
    """The naive box filter: the mean of each `factor × factor` block, summed tap by tap."""
    return sum(image[i::factor, j::factor] for i in range(factor) for j in range(factor)) / factor**2


@pytest.mark.parametrize("stage", [1, 2])
def test_each_stage_trains_on_crops_of_the_images_at_its_own_size(stage):
    config = cascade_config(**{"first_upsampler.crop_size": 8, "upsampler.crop_size": 8})
    task = UpsamplerTask.from_config(config, stage=stage)
    size = (16, 32)[stage - 1]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    batch = task.preprocess({"image": image}, np.random.default_rng(1))
    top, left = np.random.default_rng(1).integers(0, (size - 8) // 2 + 1, size=2) * 2  # the task's draw
    at_size = block_means(unit_range(image), 32 // size)
    expected = at_size[top: top + 8, left: left + 8]
    np.testing.assert_allclose(batch["image"], expected, atol=1e-6)
    np.testing.assert_allclose(batch["low_res"], block_means(expected, 2), atol=1e-6)


def test_the_cascade_upsamples_each_stage_from_the_one_before():
    config = cascade_config()
    stages = [UpsamplerTask.from_config(config, stage=stage) for stage in (1, 2)]
    params = {task.name: perturbed(task.init(jax.random.key(i), {"image": jnp.zeros((1, 16, 16, 3)),
                                                                  "low_res": jnp.zeros((1, 8, 8, 3))})["params"])
              for i, task in enumerate(stages)}
    cascade = Unclip(None, None, None, tuple(stages), params, config)
    low_res = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3), minval=-1, maxval=1)
    key, noise_key = jax.random.key(3), jax.random.key(4)
    images = cascade.upsample(low_res, key, noise_key)
    chex.assert_shape(images, (2, 32, 32, 3))

    first, second = stages  # composed by hand: the second stage's keys split from the first's
    middle = first.sample(params[first.name], low_res, jax.random.normal(noise_key, (2, 16, 16, 3)), key)
    second_key, second_noise_key = jax.random.split(key)
    expected = second.sample(params[second.name], middle, jax.random.normal(second_noise_key, (2, 32, 32, 3)),
                             second_key)
    np.testing.assert_array_equal(images, np.asarray(to_uint8(expected)))
    # One stage alone samples as the pipeline did before the cascade: its noise from `noise_key`.
    alone = Unclip(None, None, None, (first,), params, config).upsample(low_res, key, noise_key)
    np.testing.assert_array_equal(alone, np.asarray(to_uint8(middle)))
    # Shared noise in every stage: rows from one low-resolution image come out alike.
    twins = cascade.upsample(jnp.broadcast_to(low_res[:1], low_res.shape), key, noise_key, share_noise=True)
    np.testing.assert_array_equal(twins[0], twins[1])
    assert not np.array_equal(images[0], images[1])
