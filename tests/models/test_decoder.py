"""unCLIP's decoder and upsampler modules, and the upsampler's conditioning augmentation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from dalle_jax.models.clip import TextEncoder
from dalle_jax.models.decoder import Decoder, Upsampler, corrupt_low_res, gaussian_blur
from dalle_jax.models.pixels import box_downsample
from dalle_jax.nn.unet import UNet
from dalle_jax.text.tokenizer import EOS_ID
from tests.nn.test_unet import perturbed


def small_unet(attention=(4,)):
    return UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=attention,
                num_heads=2, out_channels=3)


def test_decoder_shapes_and_both_conditions_matter():
    text = TextEncoder(vocab_size=20, length=6, embed_dim=16, depth=1, num_heads=2, head_dim=8, mlp_dim=32)
    decoder = Decoder(small_unet(), text, embed_dim=32, num_clip_tokens=4)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    t, embedding = jnp.array([3, 500]), jax.random.normal(jax.random.key(1), (2, 10))
    caption = jnp.array([[5, 6, EOS_ID, 0, 0, 0], [7, EOS_ID, 0, 0, 0, 0]])
    params = perturbed(decoder.init(jax.random.key(2), x, t, embedding, caption)["params"])
    apply = lambda *args: decoder.apply({"params": params}, *args)
    out = apply(x, t, embedding, caption)
    chex.assert_shape(out, (2, 8, 8, 3))
    assert not np.allclose(out, apply(x, t, jnp.zeros_like(embedding), caption), atol=1e-4)
    assert not np.allclose(out, apply(x, t, embedding, caption.at[:, 0].set(9)), atol=1e-4)
    assert not np.allclose(out, apply(x, t + 100, embedding, caption), atol=1e-4)


def test_upsampler_reads_the_low_res_image():
    upsampler = Upsampler(small_unet(attention=()), embed_dim=32)
    x, low = jax.random.normal(jax.random.key(0), (2, 8, 8, 3)), jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    params = perturbed(upsampler.init(jax.random.key(2), x, jnp.zeros(2, jnp.int32), low)["params"])
    out = upsampler.apply({"params": params}, x, jnp.array([1, 2]), low)
    chex.assert_shape(out, (2, 8, 8, 3))
    assert not np.allclose(out, upsampler.apply({"params": params}, x, jnp.array([1, 2]), -low), atol=1e-4)


def test_gaussian_blur_matches_scipy():
    images = jax.random.uniform(jax.random.key(3), (2, 9, 9, 3))
    blurred = gaussian_blur(images, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(blurred[0], images[0], atol=1e-6)  # σ = 0 leaves the image alone
    reference = scipy.ndimage.gaussian_filter(np.asarray(images[1]), sigma=(1, 1, 0), mode="nearest", truncate=2.0)
    np.testing.assert_allclose(blurred[1], reference, atol=1e-5)


def test_corruption_is_bounded_by_its_maxima():
    images = jnp.zeros((64, 8, 8, 3))
    clean = corrupt_low_res(images, jax.random.key(4), max_blur_sigma=0.6, max_noise_std=0.0)
    np.testing.assert_allclose(clean, images)  # blurring a constant image changes nothing
    noisy = corrupt_low_res(images, jax.random.key(4), max_blur_sigma=0.0, max_noise_std=0.1)
    stds = noisy.reshape(64, -1).std(axis=1)
    assert 0.0 < float(stds.min()) and float(stds.max()) < 0.13 and float(stds.mean()) > 0.03


def test_box_downsample_averages_blocks():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    small = box_downsample(images, 2)
    np.testing.assert_allclose(small[1, 0, 1], images[1, 0:2, 2:4].mean(axis=(0, 1)))
    with pytest.raises(ValueError, match="multiple of 3"):
        box_downsample(images, 3)


def test_self_conditioned_decoder_reads_its_estimate():
    text = TextEncoder(vocab_size=20, length=6, embed_dim=16, depth=1, num_heads=2, head_dim=8, mlp_dim=32)
    decoder = Decoder(small_unet(), text, embed_dim=32, num_clip_tokens=4, self_condition=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    t, embedding = jnp.array([3, 500]), jax.random.normal(jax.random.key(1), (2, 10))
    caption = jnp.array([[5, 6, EOS_ID, 0, 0, 0], [7, EOS_ID, 0, 0, 0, 0]])
    params = perturbed(decoder.init(jax.random.key(2), x, t, embedding, caption)["params"])
    apply = lambda *args: decoder.apply({"params": params}, x, t, embedding, caption, *args)
    np.testing.assert_allclose(apply(), apply(jnp.zeros_like(x)), atol=1e-6)  # no estimate: zeros
    assert not np.allclose(apply(), apply(x), atol=1e-4)
    plain = Decoder(small_unet(), text, embed_dim=32, num_clip_tokens=4)
    with pytest.raises(ValueError, match="without self_condition"):
        plain.init(jax.random.key(2), x, t, embedding, caption, x)
