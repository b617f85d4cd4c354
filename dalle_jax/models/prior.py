"""unCLIP priors: caption → CLIP image embedding (Ramesh et al. 2022, section 2.2).

- `DiffusionPrior`: a decoder-only transformer with a causal mask over
  `[caption tokens, CLIP text embedding, timestep embedding, noised image embedding, query]`;
  the output at the final query predicts the unnoised image embedding (trained with MSE).
- Autoregressive prior: `PcaBuckets` turns an image embedding into a short sequence of
  discrete codes (principal components holding ≥ 99% of the variance, each quantised into
  equal-mass buckets), which `DalleTransformer` (with `text_condition`, for the CLIP text
  embedding) predicts after the caption exactly as DALL·E 1 predicts image tokens.
"""

from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dalle_jax.nn.transformer import LAYER_NORM_EPS, TransformerStack
from dalle_jax.nn.unet import TimestepMLP, dense


class DiffusionPrior(nn.Module):
    """`(z_t [b, P], t [b], text_embedding [b, P], caption[, caption_mask])` to x̂₀ `[b, P]`.

    `caption` is `int32 [b, L]` token ids, embedded here (this project's prior), or a text
    encoder's hidden states `[b, L, D]`, projected here (Karlo's, which reads CLIP's). With
    `caption_mask` (`bool [b, L]`, False at padding) no position attends to the masked tokens.
    """

    vocab_size: int  # unused when the caption comes as hidden states
    caption_length: int
    width: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    attention_impl: str = "auto"  # one of nn.attention.ATTENTION_IMPLEMENTATIONS
    attention_bias: bool = False
    activation: str = "gelu"  # a key of nn.transformer.ACTIVATIONS
    norm_eps: float = LAYER_NORM_EPS
    timestep_frequencies: int = 0  # sinusoids the timestep MLP reads; 0: width // 4

    @nn.compact
    def __call__(self, noised_image_embedding, t, text_embedding, caption, caption_mask=None):
        init = lambda names: nn.with_logical_partitioning(nn.initializers.normal(0.02), names)
        if caption.ndim == 3:
            words = dense(self.width, dtype=self.dtype, name="caption_in")(caption)
        else:
            words = nn.Embed(self.vocab_size, self.width, embedding_init=init(("vocab", "embed")))(caption)
        query = self.param("query", init((None, "embed")), (1, self.width))
        singles = jnp.stack([dense(self.width, dtype=self.dtype, name="text_embedding_in")(text_embedding),
                             TimestepMLP(self.width, self.dtype, self.timestep_frequencies)(t),
                             dense(self.width, dtype=self.dtype, name="image_embedding_in")(noised_image_embedding),
                             jnp.broadcast_to(query, (caption.shape[0], self.width))], axis=1)
        x = jnp.concatenate([words.astype(self.dtype), singles.astype(self.dtype)], axis=1)
        x = x + self.param("position", init(("length", "embed")), x.shape[1:]).astype(self.dtype)
        mask = None
        if caption_mask is not None:  # every position sees the unmasked caption tokens and the four singles
            keys = jnp.concatenate([caption_mask, jnp.ones((caption.shape[0], singles.shape[1]), bool)], axis=1)
            mask = jnp.broadcast_to(keys[:, None, :], (caption.shape[0], x.shape[1], x.shape[1]))
        x = TransformerStack(self.depth, self.num_heads, self.head_dim, self.mlp_dim, self.dtype, causal=True,
                             attention_impl=self.attention_impl, attention_bias=self.attention_bias,
                             activation=self.activation, norm_eps=self.norm_eps)(x, mask)
        return dense(noised_image_embedding.shape[-1], ("embed", "mlp"), jnp.float32, name="out")(x[:, -1])


@dataclasses.dataclass(frozen=True)
class PcaBuckets:
    """Image embedding `[P]` ↔ `num_components` codes in `[0, num_buckets)`.

    `mean [P]`, `components [K, P]` (orthonormal rows), `edges [K, B - 1]` (each
    component's equal-mass bucket boundaries on the fitted data) and `centres [K, B]`
    (the median of each bucket) are plain arrays, so `decode` works in numpy and under jit.
    """

    mean: np.ndarray
    components: np.ndarray
    edges: np.ndarray
    centres: np.ndarray
    explained_variance: float  # fraction of the fitted data's variance the components hold

    @property
    def num_components(self) -> int:
        return self.components.shape[0]

    @property
    def num_buckets(self) -> int:
        return self.centres.shape[1]

    @classmethod
    def fit(cls, embeddings: np.ndarray, *, variance: float = 0.99, num_buckets: int = 1024) -> "PcaBuckets":
        """The fewest principal components of `embeddings [n, P]` whose share of the variance
        reaches `variance` (the paper keeps 319 of 1024), each cut into `num_buckets`."""
        embeddings = np.asarray(embeddings, np.float64)
        mean = embeddings.mean(axis=0)
        _, singular_values, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
        shares = np.cumsum(singular_values ** 2) / np.sum(singular_values ** 2)
        k = int(np.searchsorted(shares, variance) + 1)
        components = vt[:k]
        projected = (embeddings - mean) @ components.T  # [n, K]
        quantiles = np.linspace(0, 1, 2 * num_buckets + 1)
        levels = np.quantile(projected, quantiles, axis=0).T  # [K, 2B + 1]: edges at even, centres at odd
        return cls(mean.astype(np.float32), components.astype(np.float32), levels[:, 2:-1:2].astype(np.float32),
                   levels[:, 1::2].astype(np.float32), float(shares[k - 1]))

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """`int32 [n, K]` codes of `embeddings [n, P]`."""
        projected = (np.asarray(embeddings, np.float32) - self.mean) @ self.components.T
        return np.stack([np.searchsorted(self.edges[k], projected[:, k]) for k in range(self.num_components)],
                        axis=1).astype(np.int32)

    def decode(self, codes):
        """Embeddings `[n, P]` (not normalised) of codes `int32 [n, K]`; numpy or jax."""
        xp = jnp if not isinstance(codes, np.ndarray) else np
        centres = xp.take_along_axis(xp.asarray(self.centres)[None], codes[:, :, None], axis=2)[..., 0]
        return centres @ xp.asarray(self.components) + xp.asarray(self.mean)

    def save(self, path: str | pathlib.Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, edges=self.edges, centres=self.centres,
                 explained_variance=self.explained_variance)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "PcaBuckets":
        with np.load(path) as f:
            return cls(f["mean"], f["components"], f["edges"], f["centres"], float(f["explained_variance"]))
