"""The DALL·E transformer (Ramesh et al. 2021, section 2.2): one decoder over
`[text tokens ; image tokens]`.

- Separate text and image vocabularies and output heads.
- A learned padding embedding for each text position (instead of one shared pad), so the
  model knows how long the caption was at every position.
- Learned text positions; learned row + column positions for image tokens.
- Pre-LN blocks whose masks are chosen per layer (`nn/masks.py`).

Sequence layout: positions `0 .. T-1` hold the text, `T + g` the image token `g`. Training
feeds `tokens[:, :-1]`; the output at position `p` predicts token `p + 1`, so outputs
`0 .. T-2` predict text and `T-1 ..` predict image tokens.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dalle_jax import sampling
from dalle_jax.nn import masks
from dalle_jax.nn.attention import KVCache, dense_init, init_kv_cache
from dalle_jax.nn.transformer import DecoderBlock, layer_norm, rematerialized
from dalle_jax.text.tokenizer import PAD_ID


def _embedding_init(names):
    return nn.with_logical_partitioning(nn.initializers.normal(0.02), names)


class DalleTransformer(nn.Module):
    text_vocab_size: int
    image_vocab_size: int
    text_length: int
    grid_size: tuple[int, int]  # (height, width) of the image-token grid
    embed_dim: int
    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    attention_kinds: Sequence[str]  # one per layer, from masks.ATTENTION_KINDS
    conv_kernel: int = 11
    # unCLIP's autoregressive prior: a vector (the CLIP text embedding) projected and added
    # to every text position, passed to `__call__` as `condition [batch, dim]`.
    text_condition: bool = False
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"  # what the backward pass recomputes: a key of `REMAT_POLICIES`
    # One block whose parameters carry a leading `layers` axis, applied by `nn.scan`: a compile
    # does one layer, not `depth` (the parameter tree differs, so a run keeps the value it began with).
    scan_layers: bool = False
    # How attention is computed (`nn/attention.py`); dense causal layers everywhere (`attention="full"`)
    # are what cuDNN's fused kernel runs.
    attention_impl: str = "auto"

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def plain_causal(self) -> bool:
        """Every layer is dense causal attention: the blocks need no mask array."""
        return set(self.attention_kinds) == {"full"}

    @property
    def length(self) -> int:
        """Positions of a whole sequence (and of the key/value cache)."""
        return self.text_length + self.num_image_tokens

    def setup(self):
        e = self.embed_dim
        self.text_embedding = nn.Embed(self.text_vocab_size, e, embedding_init=_embedding_init(("vocab", "embed")))
        self.image_embedding = nn.Embed(self.image_vocab_size, e, embedding_init=_embedding_init(("vocab", "embed")))
        self.pad_embedding = self.param("pad_embedding", _embedding_init(("length", "embed")), (self.text_length, e))
        self.text_position = self.param("text_position", _embedding_init(("length", "embed")), (self.text_length, e))
        self.row_position = self.param("row_position", _embedding_init(("height", "embed")), (self.grid_size[0], e))
        self.column_position = self.param("column_position", _embedding_init(("width", "embed")),
                                          (self.grid_size[1], e))
        block = functools.partial(rematerialized(DecoderBlock, self.remat), self.num_heads, self.head_dim,
                                  self.mlp_dim, self.dtype, causal=self.plain_causal,
                                  attention_impl=self.attention_impl)
        if self.scan_layers:
            self.blocks = block(name="blocks")
        else:
            self.blocks = [block(name=f"block_{i}") for i in range(self.depth)]
        self.final_norm = layer_norm(self.dtype)
        head = lambda vocab: nn.Dense(vocab, dtype=jnp.float32, kernel_init=dense_init(("embed", "vocab")),
                                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)))
        self.text_head = head(self.text_vocab_size)
        self.image_head = head(self.image_vocab_size)
        if self.text_condition:
            self.condition_projection = nn.Dense(e, dtype=self.dtype, kernel_init=dense_init(("mlp", "embed")),
                                                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                                                        ("embed",)))

    def _masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(`bool [kinds, length, length]`: one mask per distinct kind, `int32 [depth]`: each layer's)."""
        height, width = self.grid_size
        kinds = sorted(set(self.attention_kinds))
        stack = np.stack([masks.attention_mask(kind, self.text_length, height, width, self.conv_kernel)
                          for kind in kinds])
        return stack, np.asarray([kinds.index(kind) for kind in self.attention_kinds], np.int32)

    def embed(self, tokens, start):
        """`[batch, length]` ids at positions `start ..` to `[batch, length, embed]`."""
        positions = start + jnp.arange(tokens.shape[1])
        is_text = positions < self.text_length
        text_pos = jnp.clip(positions, 0, self.text_length - 1)
        text = jnp.where((tokens == PAD_ID)[..., None], self.pad_embedding[text_pos],
                         self.text_embedding(jnp.where(is_text, tokens, 0))) + self.text_position[text_pos]
        cell = jnp.clip(positions - self.text_length, 0, self.num_image_tokens - 1)
        width = self.grid_size[1]
        image = (self.image_embedding(jnp.where(is_text, 0, tokens)) + self.row_position[cell // width]
                 + self.column_position[cell % width])
        return jnp.where(is_text[None, :, None], text, image).astype(self.dtype)

    def __call__(self, tokens, *, start=0, cache: Sequence[KVCache] | None = None, condition=None):
        """Final hidden states `[batch, length, embed]` (and the updated per-layer caches).

        Without `cache`, `tokens` start at position 0. With it, `tokens` sit at positions
        `start ..` (a traced scalar is fine) and attend to everything cached before them.
        `condition [batch, dim]` (with `text_condition`) is added to the text positions.
        """
        x = self.embed(tokens, start)
        if self.text_condition:
            if condition is None:
                raise ValueError("this transformer has text_condition=True: pass condition=[batch, dim]")
            is_text = (start + jnp.arange(tokens.shape[1])) < self.text_length
            x = x + jnp.where(is_text[None, :, None], self.condition_projection(condition)[:, None], 0).astype(x.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        mask_stack, layer_masks = self._masks()
        length = tokens.shape[1]

        def layer(block, x, mask, layer_cache):
            """`mask`: the layer's whole `[length, length]` mask, or None for causal blocks (`plain_causal`)."""
            if mask is not None:  # the rows of the positions fed
                mask = (mask[:length, :length] if layer_cache is None
                        else jax.lax.dynamic_slice_in_dim(mask, start, length, axis=0))
            if layer_cache is None:
                return block(x, mask)
            return block(x, mask, cache=layer_cache, start=start)

        if self.scan_layers:  # the cache, if any, is stacked: `[depth, ...]` keys and values
            def step(block, x, xs):
                mask_index, layer_cache = xs
                return layer(block, x, None if self.plain_causal else jnp.asarray(mask_stack)[mask_index],
                             layer_cache)

            scan = nn.scan(step, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth,
                           metadata_params={nn.PARTITION_NAME: "layers"})
            x, new_cache = scan(self.blocks, x, (jnp.asarray(layer_masks), cache))
        else:
            new_cache = []
            for i, block in enumerate(self.blocks):
                mask = None if self.plain_causal else mask_stack[layer_masks[i]]
                x, layer_cache = layer(block, x, mask, None if cache is None else cache[i])
                new_cache.append(layer_cache)
        x = self.final_norm(x)
        if self.is_initializing():  # the heads are applied through their own methods; create them here
            self.text_logits(x), self.image_logits(x)
        return x if cache is None else (x, new_cache)

    def text_logits(self, hidden):
        return self.text_head(hidden)

    def image_logits(self, hidden):
        return self.image_head(hidden)

    def init_cache(self, batch: int) -> list[KVCache] | KVCache:
        """Zero keys and values for every layer: a list of them, or one stacked pair with `scan_layers`."""
        layer = init_kv_cache(batch, self.length, self.num_heads, self.head_dim, self.dtype)
        if self.scan_layers:
            return jax.tree.map(lambda zeros: jnp.broadcast_to(zeros, (self.depth, *zeros.shape)), layer)
        return [layer] * self.depth


def teacher_forced_logits(model: DalleTransformer, params, tokens):
    """Logits of every next token of whole sequences `tokens = [text ; image tokens]`, in one pass:
    (text `[batch, text_length - 1, text_vocab]`, image `[batch, num_image_tokens, image_vocab]`)."""
    hidden = model.apply({"params": params}, tokens[:, :-1])
    text_length = model.text_length
    return (model.apply({"params": params}, hidden[:, : text_length - 1], method=model.text_logits),
            model.apply({"params": params}, hidden[:, text_length - 1:], method=model.image_logits))


def image_log_likelihood(model: DalleTransformer, params, text, image_tokens):
    """log p(image tokens | text) under the model, summed over the grid: `float32 [batch]`.

    One teacher-forced pass over `[text ; image tokens]`, at temperature 1.
    """
    _, logits = teacher_forced_logits(model, params, jnp.concatenate([text, image_tokens], axis=1))
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return jnp.take_along_axis(log_probs, image_tokens[..., None], axis=-1)[..., 0].sum(-1)


def sample_best_of(model: DalleTransformer, params, text, rng, *, candidates: int, **sample_kwargs):
    """Image tokens `int32 [batch, num_image_tokens]`: of `candidates` samples per caption,
    the one the model itself finds most likely, `argmax log p(image tokens | text)`.

    A reranker that needs no second model (CLIP does this job in the paper). The likelihood
    is read at temperature 1 without guidance, whatever `sample_kwargs` sample with. The
    docs/dalle1.md compares it with plain sampling, CLIP and the pointwise mutual information.
    """
    batch = text.shape[0]
    repeated = jnp.repeat(text, candidates, axis=0)
    tokens = sample_image_tokens(model, params, repeated, rng, **sample_kwargs)
    scores = image_log_likelihood(model, params, repeated, tokens).reshape(batch, candidates)
    return tokens.reshape(batch, candidates, -1)[jnp.arange(batch), jnp.argmax(scores, axis=1)]


def guided(logits, scale):
    """Classifier-free guidance over a batch stacked as `[conditional; unconditional]`."""
    conditional, unconditional = jnp.split(logits, 2, axis=0)
    return unconditional + scale * (conditional - unconditional)


def sample_image_tokens(model: DalleTransformer, params, text, rng, *, empty_text=None, guidance_scale=1.0,
                        temperature=1.0, top_k: int = 0, top_p=1.0, use_cache: bool = True,
                        return_logits: bool = False, condition=None):
    """Image tokens `int32 [batch, num_image_tokens]` for text `[batch, text_length]`.

    One `lax.scan` over image positions. With `use_cache`, the text is processed once and
    each step runs one position against the key/value cache; without it, each step
    recomputes the whole prefix (for comparison). With `empty_text` (`[text_length]`, the
    empty caption), conditional and unconditional passes run as one batch and are mixed
    by `guidance_scale`. `return_logits` also returns the (guided) logits of every step,
    `[num_image_tokens, batch, image_vocab]`. `condition [batch, dim]` is the text
    condition of a `text_condition` model (zeros in the unconditional half).
    """
    batch, text_length = text.shape
    if empty_text is not None:
        text = jnp.concatenate([text, jnp.broadcast_to(empty_text, text.shape)], axis=0)
        if condition is not None:
            condition = jnp.concatenate([condition, jnp.zeros_like(condition)], axis=0)
    combine = (lambda logits: guided(logits, guidance_scale)) if empty_text is not None else (lambda logits: logits)
    apply = lambda *args, **kwargs: model.apply({"params": params}, *args, condition=condition, **kwargs)
    image_logits = lambda hidden: model.apply({"params": params}, hidden, method=model.image_logits)
    steps = model.num_image_tokens

    def draw(logits, key):
        logits = combine(logits)
        token = sampling.sample(key, logits, temperature=temperature, top_k=top_k, top_p=top_p)
        return logits, token

    if use_cache:
        hidden, cache = apply(text, cache=model.init_cache(text.shape[0]))
        first_logits = image_logits(hidden[:, -1])

        def step(carry, key_and_index):
            cache, logits = carry
            key, index = key_and_index
            logits, token = draw(logits, key)
            tokens = jnp.concatenate([token, token]) if empty_text is not None else token
            hidden, cache = apply(tokens[:, None], start=text_length + index, cache=cache)
            return (cache, image_logits(hidden[:, 0])), (token, logits)

        carry = (cache, first_logits)
    else:
        def step(sequence, key_and_index):
            key, index = key_and_index
            hidden = apply(sequence[:, :-1])
            logits = image_logits(jax.lax.dynamic_index_in_dim(hidden, text_length - 1 + index, 1, keepdims=False))
            logits, token = draw(logits, key)
            tokens = jnp.concatenate([token, token]) if empty_text is not None else token
            sequence = jax.lax.dynamic_update_index_in_dim(sequence, tokens, text_length + index, 1)
            return sequence, (token, logits)

        carry = jnp.concatenate([text, jnp.zeros((text.shape[0], steps), text.dtype)], axis=1)
    keys = jax.random.split(rng, steps)
    _, (tokens, logits) = jax.lax.scan(step, carry, (keys, jnp.arange(steps)))
    tokens = tokens.T.astype(jnp.int32)  # [batch, steps]
    return (tokens, logits) if return_logits else tokens

