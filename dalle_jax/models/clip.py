"""CLIP (Radford et al. 2021): a text transformer and a ViT image encoder trained to agree.

- Text: causal pre-LN transformer (the blocks DALL·E uses); the feature is the final
  hidden state at the end-of-text token.
- Image: ViT; patches by a strided convolution (optionally overlapping: a kernel wider than
  the stride), optionally after a stem of stride-2 3×3 convolutions that does part of the
  patching (Xiao et al. 2021, "Early convolutions help transformers see better"); a class
  token or mean pooling.
- Both are projected linearly to a shared embedding and L2-normalised. The learnable
  temperature starts at `log(1 / 0.07)` and its exponential is clamped at 100.

OpenAI's released architecture (`weights/hf_clip.py` loads its weights) is the same network
with these fields set: biases in attention, quick-GELU, LayerNorm ε = 1e-5, a LayerNorm
before the image tower's blocks, a patch convolution without bias, pixels resized bicubically
to the tower's `image_size` and standardised with CLIP's mean and std, and the text pooled at
its tokenizer's end-of-text id.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dalle_jax.models.pixels import block_resize, to_unit_range
from dalle_jax.nn.attention import dense_init
from dalle_jax.nn.conv import conv
from dalle_jax.nn.transformer import LAYER_NORM_EPS, TransformerStack, layer_norm
from dalle_jax.text.tokenizer import EOS_ID

MAX_LOGIT_SCALE = 100.0
# The pixel statistics OpenAI's CLIP standardises its inputs with (RGB, of [0, 1] values).
OPENAI_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def _normal(names, stddev=0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


class TextEncoder(nn.Module):
    """`int32 [batch, length]` tokens to `[batch, embed_dim]` features at the first `eos_id`."""

    vocab_size: int
    length: int
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    eos_id: int = EOS_ID
    attention_bias: bool = False
    activation: str = "gelu"
    norm_eps: float = LAYER_NORM_EPS
    attention_impl: str = "auto"  # one of nn.attention.ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, tokens, *, pooled: bool = True):
        """`[batch, embed_dim]`, or with `pooled=False` every position `[batch, length, embed_dim]`."""
        x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_normal(("vocab", "embed")))(tokens)
        x = x + self.param("position", _normal(("length", "embed")), (self.length, self.embed_dim))[: tokens.shape[1]]
        x = TransformerStack(self.depth, self.num_heads, self.head_dim, self.mlp_dim, self.dtype, self.attention_bias,
                             self.activation, self.norm_eps, causal=True,
                             attention_impl=self.attention_impl)(x.astype(self.dtype))
        return at_end_of_text(x, tokens, self.eos_id) if pooled else x


class ProjectedTextEncoder(nn.Module):
    """CLIP's text tower and its projection, unnormalised (`transformers`' CLIPTextModelWithProjection,
    which Karlo's prior and decoder read): tokens to `(projected feature at the end of text [b, P],
    every position's final hidden state [b, L, D])`, both float32."""

    text: TextEncoder
    projection_dim: int

    @nn.compact
    def __call__(self, tokens):
        hidden = self.text(tokens, pooled=False)
        projection = nn.Dense(self.projection_dim, use_bias=False, kernel_init=dense_init(("embed", "mlp")),
                              name="text_projection")
        pooled = projection(at_end_of_text(hidden, tokens, self.text.eos_id))
        return pooled.astype(jnp.float32), hidden.astype(jnp.float32)


class ProjectedImageEncoder(nn.Module):
    """CLIP's image tower and its projection, unnormalised (`transformers`'
    CLIPVisionModelWithProjection, whose embedding Karlo's variations decode): `uint8 [b, H, W, 3]`
    to float32 `[b, P]`."""

    vision: VisionEncoder
    projection_dim: int

    @nn.compact
    def __call__(self, images):
        projection = nn.Dense(self.projection_dim, use_bias=False, kernel_init=dense_init(("embed", "mlp")),
                              name="image_projection")
        return projection(self.vision(images)).astype(jnp.float32)


def at_end_of_text(hidden, tokens, eos_id: int = EOS_ID):
    """`hidden [batch, length, dim]` at each row's first `eos_id` (the last position if it has none)."""
    end = jnp.argmax(tokens == eos_id, axis=1)
    end = jnp.where(jnp.any(tokens == eos_id, axis=1), end, tokens.shape[1] - 1)
    return jnp.take_along_axis(hidden, end[:, None, None], axis=1)[:, 0]


def standardize_pixels(images, image_size: int, mean: Sequence[float], std: Sequence[float]):
    """CLIP's preprocessing of square `uint8 [batch, H, W, 3]` images: a bicubic resize (with
    antialiasing when shrinking) to `image_size`, then `(x / 255 - mean) / std` per channel."""
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1] != image_size or x.shape[2] != image_size:
        x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]), "bicubic")
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class VisionEncoder(nn.Module):
    """`uint8 [batch, H, W, 3]` images to `[batch, embed_dim]` (ViT, class token or mean pooling)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    pooling: str = "cls"  # or "mean"
    # Stride-2 3×3 conv + GELU layers before the patch embedding, which then strides the rest
    # of `patch_size` (a multiple of 2 ** len(stem_channels)).
    stem_channels: Sequence[int] = ()
    patch_kernel: int = 0  # > its stride: overlapping patches (each token sees its neighbours' pixels)
    image_size: int = 0  # > 0: larger images (a multiple of it) are box-averaged down to this size first
    dtype: jnp.dtype = jnp.float32
    # OpenAI's architecture: with `pixel_mean` and `pixel_std`, images are resized bicubically to
    # `image_size` and standardised (`standardize_pixels`) instead of mapped to [-1, 1].
    pixel_mean: Sequence[float] | None = None
    pixel_std: Sequence[float] | None = None
    pre_norm: bool = False  # a LayerNorm between the embeddings and the blocks
    patch_bias: bool = True
    attention_bias: bool = False
    activation: str = "gelu"
    norm_eps: float = LAYER_NORM_EPS
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, images, *, pooled: bool = True):
        """`[batch, embed_dim]`, or with `pooled=False` every output token `[batch, tokens, embed_dim]`."""
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.pixel_mean is not None:
            x = standardize_pixels(images, self.image_size, self.pixel_mean, self.pixel_std)
        else:
            x = to_unit_range(images)
            if self.image_size and x.shape[1] != self.image_size:  # e.g. a cascade's decoder draws, below CLIP's size
                x = block_resize(x, self.image_size)
        x = x.astype(self.dtype)
        p = self.patch_size // 2 ** len(self.stem_channels)
        if p * 2 ** len(self.stem_channels) != self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} is not a multiple of 2 ** len(stem_channels) "
                             f"(stem_channels={tuple(self.stem_channels)})")
        for i, channels in enumerate(self.stem_channels):
            x = nn.gelu(conv(channels, stride=2, dtype=self.dtype, name=f"stem_{i}")(x))
        k = max(self.patch_kernel, p)
        x = nn.Conv(self.embed_dim, (k, k), strides=(p, p), padding="SAME", dtype=self.dtype, name="patch_embed",
                    use_bias=self.patch_bias, kernel_init=dense_init(("height", "width", None, "embed")),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(x)
        x = x.reshape(x.shape[0], -1, self.embed_dim)
        if self.pooling == "cls":
            cls = self.param("cls", _normal((None, "embed")), (1, self.embed_dim))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.embed_dim)).astype(x.dtype), x], axis=1)
        x = x + self.param("position", _normal(("length", "embed")), x.shape[1:])
        if self.pre_norm:
            x = layer_norm(self.dtype, "pre_norm", self.norm_eps)(x)
        x = TransformerStack(self.depth, self.num_heads, self.head_dim, self.mlp_dim, self.dtype, self.attention_bias,
                             self.activation, self.norm_eps, attention_impl=self.attention_impl)(x)
        if not pooled:
            return x
        return x[:, 0] if self.pooling == "cls" else x.mean(axis=1)


class CLIP(nn.Module):
    text: TextEncoder
    vision: VisionEncoder
    projection_dim: int

    def setup(self):
        project = lambda: nn.Dense(self.projection_dim, use_bias=False, kernel_init=dense_init(("embed", "mlp")))
        self.text_projection = project()
        self.image_projection = project()
        self.logit_scale = self.param("logit_scale", nn.with_logical_partitioning(
            lambda _: jnp.full((), jnp.log(1 / 0.07), jnp.float32), ()))

    def encode_text(self, tokens):
        """L2-normalised `float32 [batch, projection_dim]`."""
        return _l2_normalize(self.text_projection(self.text(tokens)))

    def encode_image(self, images):
        return _l2_normalize(self.image_projection(self.vision(images)))

    def image_features(self, images, *, pooled: bool):
        """F(i) for the captioner: the normalised embedding `[batch, 1, projection_dim]` if
        `pooled`, else the image tower's output tokens `[batch, tokens, embed_dim]`."""
        return self.encode_image(images)[:, None] if pooled else self.vision(images, pooled=False)

    def __call__(self, images, tokens):
        """(image embeddings, text embeddings, temperature `exp(logit_scale)` clamped at 100)."""
        scale = jnp.minimum(jnp.exp(self.logit_scale), MAX_LOGIT_SCALE)
        return self.encode_image(images), self.encode_text(tokens), scale


def _l2_normalize(x):
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)


def contrastive_loss(image_embeddings, text_embeddings, scale):
    """Symmetric InfoNCE over the whole (global) batch: row `i` of each matches row `i` of the other.

    Under `jit` the batch may be sharded across devices; the `[batch, batch]` similarity is
    over the global batch either way.
    """
    logits = scale * image_embeddings @ text_embeddings.T
    labels = jnp.arange(logits.shape[0])
    image_to_text = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    text_to_image = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    return (image_to_text + text_to_image) / 2

