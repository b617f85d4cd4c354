"""Pre-LayerNorm transformer decoder blocks (shared by DALL·E, CLIP's text tower, the captioner)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dalle_jax.nn.attention import KVCache, SelfAttention, dense_init

ACTIVATION_AXES = ("batch", "length", "embed")
LAYER_NORM_EPS = 1e-6


def quick_gelu(x):
    """`x · sigmoid(1.702 x)`, the GELU approximation OpenAI's CLIP was trained with."""
    return x * nn.sigmoid(1.702 * x)


# `gelu` is flax's default, the tanh approximation; `gelu_erf` the exact form (PyTorch's `nn.GELU()`,
# `transformers`' "gelu").
ACTIVATIONS = {"gelu": nn.gelu, "gelu_erf": lambda x: nn.gelu(x, approximate=False), "quick_gelu": quick_gelu}


def layer_norm(dtype, name=None, eps: float = LAYER_NORM_EPS) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    activation: str = "gelu"  # a key of ACTIVATIONS

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init(("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(x)
        h = nn.with_logical_constraint(ACTIVATIONS[self.activation](h), ("batch", "length", "mlp"))
        return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=dense_init(("mlp", "embed")),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(h)


class DecoderBlock(nn.Module):
    """`x + attention(norm(x))`, then `x + mlp(norm(x))`; returns `(x, cache)`. `causal`, `mask` and
    `attention_impl` as in `SelfAttention`."""

    num_heads: int
    head_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    attention_bias: bool = False
    activation: str = "gelu"
    norm_eps: float = LAYER_NORM_EPS
    causal: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, mask=None, *, cache: KVCache | None = None, start=0):
        h, cache = SelfAttention(self.num_heads, self.head_dim, self.dtype, self.attention_bias, self.causal,
                                 self.attention_impl, name="attention")(
            layer_norm(self.dtype, "attention_norm", self.norm_eps)(x), mask, cache=cache, start=start)
        x = nn.with_logical_constraint(x + h, ACTIVATION_AXES)
        x = x + MlpBlock(self.mlp_dim, self.dtype, self.activation, name="mlp")(
            layer_norm(self.dtype, "mlp_norm", self.norm_eps)(x))
        return nn.with_logical_constraint(x, ACTIVATION_AXES), cache


# What the backward pass keeps of a block's forward pass (`model.remat`): `none` keeps everything,
# `dots` the outputs of its weight matrix products (the attention's batched products and every
# elementwise op are recomputed), `full` only the block's input (the whole block is recomputed).
REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


def rematerialized(block_class: type[nn.Module], policy: str, static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
    """`block_class` under `nn.remat` with a policy of `REMAT_POLICIES` (itself for `none`);
    `static_argnums` index `__call__`'s arguments, the module itself being 0."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat policy {policy!r} is not one of {sorted(REMAT_POLICIES)}")
    if policy == "none":
        return block_class
    remat_class = nn.remat(block_class, policy=REMAT_POLICIES[policy], static_argnums=static_argnums)
    remat_class.__name__ = block_class.__name__  # unnamed blocks keep their names: one parameter tree for every policy
    return remat_class


class TransformerStack(nn.Module):
    """`depth` pre-LN blocks, causal or not, under one optional mask, then a final LayerNorm."""

    depth: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    attention_bias: bool = False
    activation: str = "gelu"
    norm_eps: float = LAYER_NORM_EPS
    causal: bool = False
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x, mask=None):
        for i in range(self.depth):
            x, _ = DecoderBlock(self.num_heads, self.head_dim, self.mlp_dim, self.dtype, self.attention_bias,
                                self.activation, self.norm_eps, self.causal, self.attention_impl,
                                name=f"block_{i}")(x, mask)
        return layer_norm(self.dtype, "final_norm", self.norm_eps)(x)
