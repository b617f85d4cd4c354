"""The DALL·E 3 captioner (Betker et al. 2023, section 2.1): a language model over caption
tokens conditioned on an image through a compressed representation F(i) of it.

F(i) comes from a trained CLIP image tower: its features `[batch, n, feature_dim]` (the
pooled, projected image embedding is `n = 1`; the ViT's output tokens are `n = 1 + patches`)
are projected into `num_prefix` prefix tokens (each feature into `num_prefix / n` of them),
as ClipCap and CoCa's captioning head do. When the features end with a `grid_size × grid_size`
grid of patch tokens (row-major), each patch's prefix token also carries its coordinates
through a linear map (CoordConv's idea): spatial relations between objects ("to the left
of") then need only a comparison of averaged coordinates, not a learned decoding of 64
unrelated position vectors (docs/dalle3.md).

Sequence: `[prefix ; BOS ; caption tokens]`. Prefix positions see each other (a prefix-LM
mask); caption positions attend causally to everything before them. The output at position
`num_prefix + j` predicts caption token `j`. The blocks are the DALL·E transformer's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax import sampling
from dalle_jax.nn.attention import KVCache, dense_init, init_kv_cache
from dalle_jax.nn.transformer import DecoderBlock, layer_norm
from dalle_jax.text.tokenizer import BOS_ID, EOS_ID, PAD_ID


def prefix_lm_mask(num_prefix: int, length: int) -> np.ndarray:
    """`bool [length, length]`: causal, and the first `num_prefix` positions see each other."""
    query, key = np.arange(length)[:, None], np.arange(length)[None, :]
    return (key <= query) | ((query < num_prefix) & (key < num_prefix))


def patch_coordinates(num_features: int, grid_size: int) -> np.ndarray:
    """`float32 [num_features, 2]`: (row, column) in [-1, 1] of each of the last `grid_size²`
    feature tokens (a row-major grid of patches); zeros for the tokens before them (a class token)."""
    leading = num_features - grid_size ** 2
    if leading < 0:
        raise ValueError(f"{num_features} image feature tokens cannot hold a {grid_size}×{grid_size} patch grid")
    axis = np.linspace(-1.0, 1.0, grid_size, dtype=np.float32)
    rows, columns = np.meshgrid(axis, axis, indexing="ij")
    grid = np.stack([rows.ravel(), columns.ravel()], axis=-1)
    return np.concatenate([np.zeros((leading, 2), np.float32), grid])


def _normal(names):
    return nn.with_logical_partitioning(nn.initializers.normal(0.02), names)


class PrefixProjection(nn.Module):
    """`[batch, n, feature_dim]` to `[batch, num_prefix, embed_dim]`: each feature token
    becomes `num_prefix / n` prefix tokens through one linear map."""

    num_prefix: int
    embed_dim: int

    @nn.compact
    def __call__(self, features):
        batch, n, _ = features.shape
        if self.num_prefix % n:
            raise ValueError(f"num_prefix={self.num_prefix} is not a multiple of the {n} image feature tokens")
        x = nn.Dense(self.num_prefix // n * self.embed_dim, kernel_init=dense_init((None, "embed")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(features)
        return x.reshape(batch, self.num_prefix, self.embed_dim)


class Captioner(nn.Module):
    vocab_size: int
    caption_length: int  # tokens per caption (pieces, EOS, padding)
    num_prefix: int  # prefix tokens made from the image features
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    grid_size: int = 0  # > 0: the last grid_size² feature tokens are image patches, row-major
    dtype: jnp.dtype = jnp.float32

    @property
    def length(self) -> int:
        """Positions of the cache: prefix, BOS and every caption token."""
        return self.num_prefix + 1 + self.caption_length

    def setup(self):
        e = self.embed_dim
        self.prefix_projection = PrefixProjection(self.num_prefix, e)
        self.prefix_position = self.param("prefix_position", _normal(("length", "embed")), (self.num_prefix, e))
        if self.grid_size:
            self.coordinate_projection = PrefixProjection(self.num_prefix, e)
        self.token_embedding = nn.Embed(self.vocab_size, e, embedding_init=_normal(("vocab", "embed")))
        self.token_position = self.param("token_position", _normal(("length", "embed")), (self.caption_length + 1, e))
        self.blocks = [DecoderBlock(self.num_heads, self.head_dim, self.mlp_dim, self.dtype, name=f"block_{i}")
                       for i in range(self.depth)]
        self.final_norm = layer_norm(self.dtype)
        self.head = nn.Dense(self.vocab_size, dtype=jnp.float32, kernel_init=dense_init(("embed", "vocab")),
                             bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)))

    def embed_prefix(self, features):
        """`[batch, n, feature_dim]` image features to `[batch, num_prefix, embed]`."""
        x = self.prefix_projection(features) + self.prefix_position
        if self.grid_size:
            coordinates = jnp.asarray(patch_coordinates(features.shape[1], self.grid_size))
            x = x + self.coordinate_projection(coordinates[None])
        return x.astype(self.dtype)

    def embed_tokens(self, tokens, start):
        """Caption-side ids `[batch, length]` at sequence positions `start ..` (BOS sits at `num_prefix`)."""
        positions = start - self.num_prefix + jnp.arange(tokens.shape[1])
        return (self.token_embedding(tokens) + self.token_position[positions]).astype(self.dtype)

    def run(self, x, *, start=0, cache: list[KVCache] | None = None):
        """Blocks over embedded positions `start ..`; returns logits `[batch, length, vocab]` (and caches)."""
        mask = jnp.asarray(prefix_lm_mask(self.num_prefix, self.length))
        length = x.shape[1]
        new_cache = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x, _ = block(x, mask[:length, :length])
            else:
                x, layer_cache = block(x, jax.lax.dynamic_slice_in_dim(mask, start, length, axis=0),
                                       cache=cache[i], start=start)
                new_cache.append(layer_cache)
        logits = self.head(self.final_norm(x))
        return logits if cache is None else (logits, new_cache)

    def __call__(self, features, captions):
        """Teacher-forced logits `[batch, caption_length, vocab]`: row `j` predicts `captions[:, j]`."""
        inputs = jnp.concatenate([jnp.full_like(captions[:, :1], BOS_ID), captions[:, :-1]], axis=1)
        x = jnp.concatenate([self.embed_prefix(features), self.embed_tokens(inputs, self.num_prefix)], axis=1)
        return self.run(x)[:, self.num_prefix:]

    def prefill(self, features, cache):
        """Runs prefix and BOS into the cache; logits `[batch, vocab]` for the first caption token."""
        bos = jnp.full((features.shape[0], 1), BOS_ID, jnp.int32)
        x = jnp.concatenate([self.embed_prefix(features), self.embed_tokens(bos, self.num_prefix)], axis=1)
        logits, cache = self.run(x, start=0, cache=cache)
        return logits[:, -1], cache

    def step(self, token, index, cache):
        """Feeds caption token `index` (`[batch]`); logits for token `index + 1`."""
        start = self.num_prefix + 1 + index
        logits, cache = self.run(self.embed_tokens(token[:, None], start), start=start, cache=cache)
        return logits[:, 0], cache

    def init_cache(self, batch: int) -> list[KVCache]:
        return [init_kv_cache(batch, self.length, self.num_heads, self.head_dim, self.dtype) for _ in range(self.depth)]


def _after_end(tokens, finished):
    """Once a row has emitted `EOS_ID` it emits only `PAD_ID`."""
    return jnp.where(finished, PAD_ID, tokens), finished | (tokens == EOS_ID)


def sample_captions(model: Captioner, params, features, rng, *, temperature=0.0, top_p=1.0, return_logits=False):
    """Caption ids `int32 [batch, caption_length]` (EOS then PAD), one `lax.scan` with the cache.

    `temperature = 0` is greedy decoding; otherwise temperature and nucleus (top-p) sampling.
    `return_logits` also returns each step's logits, `[caption_length, batch, vocab]`.
    """
    apply = lambda *args, **kwargs: model.apply({"params": params}, *args, **kwargs)
    batch = features.shape[0]
    logits, cache = apply(features, model.init_cache(batch), method=model.prefill)

    def step(carry, key_and_index):
        logits, cache, finished = carry
        key, index = key_and_index
        token = sampling.sample(key, logits, temperature=temperature, top_p=top_p)
        token, finished = _after_end(token, finished)
        next_logits, cache = apply(token, index, cache, method=model.step)
        return (next_logits, cache, finished), (token, logits)

    steps = model.caption_length
    carry = (logits, cache, jnp.zeros((batch,), bool))
    _, (tokens, all_logits) = jax.lax.scan(step, carry, (jax.random.split(rng, steps), jnp.arange(steps)))
    return (tokens.T, all_logits) if return_logits else tokens.T


def beam_search_captions(model: Captioner, params, features, *, beam_size: int = 4, length_penalty: float = 1.0):
    """Beam search: `(int32 [batch, caption_length] best captions, float32 [batch] their log-probabilities)`.

    Beams are rows of one batch of `batch * beam_size`; each step keeps the `beam_size` best
    extensions of all beams and reorders the caches to match. A finished beam extends only
    with `PAD_ID` at no cost. The winner maximises `log p / num_tokens ** length_penalty`
    (0 ranks by plain log-probability).
    """
    apply = lambda *args, **kwargs: model.apply({"params": params}, *args, **kwargs)
    batch, k, steps = features.shape[0], beam_size, model.caption_length
    logits, cache = apply(jnp.repeat(features, k, axis=0), model.init_cache(batch * k), method=model.prefill)
    vocab = logits.shape[-1]
    scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1)), (batch, 1))  # all beams start as one
    tokens = jnp.zeros((batch, k, steps), jnp.int32)
    finished = jnp.zeros((batch, k), bool)
    pad_only = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, -jnp.inf)

    def step(carry, index):
        logits, cache, scores, tokens, finished = carry
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
        log_probs = jnp.where(finished[..., None], pad_only, log_probs)
        candidates = (scores[..., None] + log_probs).reshape(batch, k * vocab)
        scores, flat = jax.lax.top_k(candidates, k)
        beam, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1).at[:, :, index].set(token)
        finished = jnp.take_along_axis(finished, beam, axis=1) | (token == EOS_ID)
        rows = (jnp.arange(batch)[:, None] * k + beam).reshape(-1)
        cache = jax.tree.map(lambda c: c[rows], cache)
        logits, cache = apply(token.reshape(-1), index, cache, method=model.step)
        return (logits, cache, scores, tokens, finished), None

    carry = (logits, cache, scores, tokens, finished)
    (_, _, scores, tokens, _), _ = jax.lax.scan(step, carry, jnp.arange(steps))
    num_tokens = jnp.sum(tokens != PAD_ID, axis=-1).clip(1)
    best = jnp.argmax(scores / num_tokens ** length_penalty, axis=1)
    take = lambda x: jnp.take_along_axis(x, best.reshape(batch, *([1] * (x.ndim - 1))), axis=1)[:, 0]
    return take(tokens), take(scores)
