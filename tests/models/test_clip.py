import json
import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.models import clip
from dalle_jax.text.tokenizer import EOS_ID, PAD_ID
from tests.conftest import REPO


def tiny_clip(pooling="cls", stem_channels=(), patch_kernel=0):
    common = dict(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_dim=64)
    return clip.CLIP(clip.TextEncoder(vocab_size=30, length=8, **common),
                     clip.VisionEncoder(patch_size=8, pooling=pooling, stem_channels=stem_channels,
                                       patch_kernel=patch_kernel, **common),
                     projection_dim=16)


def _inputs(batch=4):
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, 32, 32, 3)), jnp.uint8)
    tokens = rng.integers(4, 30, (batch, 8)).astype(np.int32)
    tokens[:, 5], tokens[:, 6:] = EOS_ID, PAD_ID
    return images, jnp.asarray(tokens)


@pytest.mark.parametrize("pooling,stem_channels,patch_kernel",
                         [("cls", (), 0), ("mean", (), 0), ("cls", (), 12), ("cls", (8, 8), 4)])
def test_shapes_norms_and_temperature(pooling, stem_channels, patch_kernel):
    model, (images, tokens) = tiny_clip(pooling, stem_channels, patch_kernel), _inputs()
    variables = nn.unbox(model.init(jax.random.key(0), images, tokens))
    image_emb, text_emb, scale = model.apply(variables, images, tokens)
    chex.assert_shape([image_emb, text_emb], (4, 16))
    kernel = variables["params"]["vision"]["patch_embed"]["kernel"]
    stride = 8 // 2 ** len(stem_channels)  # the stride-2 stem does part of the patching
    chex.assert_shape(kernel, (max(patch_kernel, stride),) * 2 + (stem_channels[-1] if stem_channels else 3, 32))
    patch_tokens = (pooling == "cls") + (32 // 8) ** 2
    chex.assert_shape(model.apply(variables, images, pooled=False, method="image_features"), (4, patch_tokens, 32))
    chex.assert_shape(model.apply(variables, images, pooled=True, method="image_features"), (4, 1, 16))
    np.testing.assert_allclose(jnp.linalg.norm(image_emb, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(text_emb, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scale, 1 / 0.07, rtol=1e-5)
    variables["params"]["logit_scale"] = jnp.log(500.0)
    assert float(model.apply(variables, images, tokens)[2]) == clip.MAX_LOGIT_SCALE


def test_images_of_other_sizes_are_read_at_the_encoder_size():
    """Larger images are box-averaged to the encoder's size, smaller ones (a cascade's decoder
    draws) have each pixel repeated: both give the embedding of the image at its size."""
    model = clip.VisionEncoder(image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, head_dim=16,
                               mlp_dim=64)
    small = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    doubled = small.repeat(2, axis=1).repeat(2, axis=2)
    params = model.init(jax.random.key(0), jnp.asarray(doubled))
    embed = lambda images: np.asarray(model.apply(params, jnp.asarray(images)))
    np.testing.assert_array_equal(embed(small), embed(doubled))
    np.testing.assert_allclose(embed(doubled.repeat(2, axis=1).repeat(2, axis=2)), embed(doubled), atol=1e-6)
    with pytest.raises(ValueError, match="need square images whose side divides 32"):
        embed(small[:, :12, :12])


def test_a_stem_deeper_than_the_patch_size_is_refused():
    model, (images, tokens) = tiny_clip(stem_channels=(8, 8, 8, 8)), _inputs()
    with pytest.raises(ValueError, match="patch_size 8 is not a multiple of 2 \\*\\* len"):
        model.init(jax.random.key(0), images, tokens)


def test_text_feature_is_read_at_end_of_text():
    model, (images, tokens) = tiny_clip(), _inputs()
    variables = nn.unbox(model.init(jax.random.key(0), images, tokens))
    text = lambda t: model.apply(variables, t, method="encode_text")
    after_end = tokens.at[:, 6:].set(17)  # what follows EOS is invisible to a causal model read at EOS
    np.testing.assert_allclose(text(after_end), text(tokens), atol=1e-6)
    before_end = tokens.at[:, 2].set(17)
    assert not np.allclose(text(before_end), text(tokens), atol=1e-4)


def naive_infonce(image, text, scale):
    logits = scale * image @ text.T
    def cross_entropy(rows):
        rows = rows - rows.max(axis=1, keepdims=True)
        log_probs = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_probs))
    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def test_loss_equals_a_naive_infonce():
    rng = np.random.default_rng(1)
    image, text = (rng.normal(size=(6, 5)) for _ in range(2))
    image, text = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (image, text))
    loss = clip.contrastive_loss(jnp.asarray(image, jnp.float32), jnp.asarray(text, jnp.float32), 14.3)
    np.testing.assert_allclose(loss, naive_infonce(image, text, 14.3), rtol=1e-5)
    perfect = clip.contrastive_loss(jnp.eye(4), jnp.eye(4), 100.0)
    assert float(perfect) < 1e-6  # matched pairs far apart from the rest cost nothing


_SHARDED_LOSS = """
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from dalle_jax.models import clip
rng = np.random.default_rng(2)
image, text = (rng.normal(size=(16, 8)).astype(np.float32) for _ in range(2))
image, text = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (image, text))
single = float(jax.jit(clip.contrastive_loss, static_argnums=2)(image, text, 20.0))
mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
sharded = float(jax.jit(clip.contrastive_loss, static_argnums=2)(shard(image), shard(text), 20.0))
print(json.dumps({"devices": jax.device_count(), "single": single, "sharded": sharded}))
"""


def test_loss_over_a_batch_sharded_on_eight_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", _SHARDED_LOSS], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    np.testing.assert_allclose(report["sharded"], report["single"], rtol=1e-6)
