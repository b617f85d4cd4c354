"""unCLIP's image diffusion models (Ramesh et al. 2022, section 2.1).

- `Decoder`: GLIDE's text-conditional UNet, also conditioned on a CLIP image embedding:
  the embedding is projected and added to the timestep embedding, and projected into
  `num_clip_tokens` extra context tokens that the attention layers see beside the
  caption's tokens. Classifier-free guidance comes from training with the embedding
  zeroed (10%) and the caption emptied (50%). With `self_condition`, it also reads an
  estimate of x₀ (`diffusion/gaussian.py`), concatenated to x_t's channels.
- `KarloDecoder`: Kakao Brain's Karlo decoder (diffusers' UnCLIPTextProjModel and
  UNet2DConditionModel, loaded by `weights/karlo.py`): the same recipe over a frozen CLIP text
  encoder's outputs instead of a caption encoder of its own.
- `Upsampler`: a convolution-only UNet that denoises the high-resolution image given the
  low-resolution one (upsampled and concatenated); `corrupt_low_res` is the conditioning
  augmentation (Gaussian blur and noise) it is trained with.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dalle_jax.models.clip import TextEncoder, at_end_of_text
from dalle_jax.nn.transformer import layer_norm
from dalle_jax.nn.unet import TimestepMLP, UNet, dense


class Decoder(nn.Module):
    """`(x_t [b, H, W, 3], t [b], image_embedding [b, P], caption int32 [b, L][, x0_estimate like
    x_t])` to the UNet's prediction; a self-conditioned decoder reads `x0_estimate` (zeros if None)."""

    unet: UNet
    caption_encoder: TextEncoder
    embed_dim: int  # width of the timestep + conditioning embedding
    num_clip_tokens: int = 4
    self_condition: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_t, t, image_embedding, caption, x0_estimate=None, *, deterministic: bool = True):
        if self.self_condition:
            x_t = jnp.concatenate([x_t, jnp.zeros_like(x_t) if x0_estimate is None else x0_estimate], axis=-1)
        elif x0_estimate is not None:
            raise ValueError("x0_estimate given to a decoder without self_condition")
        text = self.caption_encoder(caption, pooled=False)  # [b, L, D]
        width = text.shape[-1]
        project = lambda name: dense(self.embed_dim, dtype=self.dtype, name=name)
        embedding = (TimestepMLP(self.embed_dim, self.dtype)(t) + project("image_embedding_projection")(image_embedding)
                     + project("caption_projection")(at_end_of_text(text, caption)))
        clip_tokens = dense(self.num_clip_tokens * width, dtype=self.dtype, name="clip_tokens")(image_embedding)
        context = jnp.concatenate([clip_tokens.reshape(-1, self.num_clip_tokens, width), text], axis=1)
        return self.unet(x_t, embedding, context, deterministic=deterministic)


class KarloDecoder(nn.Module):
    """`(x_t [b, H, W, 3], t [b], image_embedding [b, P], text_embedding [b, P], text_hidden
    [b, L, D], text_mask bool [b, L])` to the UNet's output (ε and the variance's `v`).

    CLIP's image and text embeddings are projected and added to the timestep embedding; the
    image embedding also becomes `num_clip_tokens` context tokens, before the text encoder's
    hidden states (projected and normalised); the attention sees the text's unmasked tokens.
    `null_image_embedding` is what classifier-free guidance gives in place of the image's.
    """

    unet: UNet
    embed_dim: int
    context_dim: int
    num_clip_tokens: int = 4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_t, t, image_embedding, text_embedding, text_hidden, text_mask):
        self.param("null_image_embedding", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                   image_embedding.shape[-1:])
        project = lambda features, name: dense(features, dtype=self.dtype, name=name)
        embedding = (TimestepMLP(self.embed_dim, self.dtype)(t) + project(self.embed_dim, "text_embedding_projection")(
            text_embedding) + project(self.embed_dim, "image_embedding_projection")(image_embedding))
        clip_tokens = project(self.context_dim * self.num_clip_tokens, "clip_tokens")(image_embedding)
        clip_tokens = clip_tokens.reshape(-1, self.context_dim, self.num_clip_tokens).transpose(0, 2, 1)
        text = layer_norm(self.dtype, "text_norm", eps=1e-5)(
            project(self.context_dim, "text_projection")(text_hidden))
        context = jnp.concatenate([clip_tokens.astype(text.dtype), text], axis=1)
        context_mask = jnp.concatenate([jnp.ones(clip_tokens.shape[:2], bool), text_mask], axis=1)
        return self.unet(x_t, embedding, context, context_mask=context_mask)


class Upsampler(nn.Module):
    """`(x_t [b, H, W, 3], t [b], low_res [b, h, w, 3] in [-1, 1])` to the UNet's prediction;
    `low_res` is resized to `x_t`'s size by `resize` (a `jax.image.resize` method)."""

    unet: UNet
    embed_dim: int
    dtype: jnp.dtype = jnp.float32
    resize: str = "bilinear"

    @nn.compact
    def __call__(self, x_t, t, low_res, *, deterministic: bool = True):
        upsampled = jax.image.resize(low_res, (*x_t.shape[:3], low_res.shape[-1]), self.resize)
        return self.unet(jnp.concatenate([x_t, upsampled.astype(x_t.dtype)], axis=-1),
                         TimestepMLP(self.embed_dim, self.dtype)(t), deterministic=deterministic)


def gaussian_blur(images, sigma, radius: int = 2):
    """Blurs `[b, H, W, C]` with a separable Gaussian of per-example std `sigma [b]` (0: unchanged)."""
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * (offsets[None] / jnp.maximum(sigma[:, None], 1e-6)) ** 2)
    weights = weights / weights.sum(axis=1, keepdims=True)  # [b, 2r + 1]
    padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    height, width = images.shape[1:3]
    rows = sum(weights[:, i, None, None, None] * padded[:, i: i + height] for i in range(2 * radius + 1))
    return sum(weights[:, i, None, None, None] * rows[:, :, i: i + width] for i in range(2 * radius + 1))


def corrupt_low_res(images, rng, *, max_blur_sigma: float, max_noise_std: float):
    """Conditioning augmentation: per example, a Gaussian blur of std `U[0, max_blur_sigma]`
    (the paper's first upsampler) and Gaussian noise of std `U[0, max_noise_std]`."""
    blur_key, noise_level_key, noise_key = jax.random.split(rng, 3)
    batch = images.shape[0]
    sigma = jax.random.uniform(blur_key, (batch,), maxval=max_blur_sigma)
    noise_std = jax.random.uniform(noise_level_key, (batch, 1, 1, 1), maxval=max_noise_std)
    return gaussian_blur(images, sigma) + noise_std * jax.random.normal(noise_key, images.shape, images.dtype)
