"""A toy image classifier: the smallest real model the trainer trains (foundation demo).

It reads a shapes image and predicts how many objects it holds and which colours are
present. Its parameters carry logical axis names like every model here.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def _partitioned(init, names):
    return nn.with_logical_partitioning(init, names)


class ToyClassifier(nn.Module):
    """`uint8 [batch, height, width, 3]` images to `[batch, num_outputs]` logits."""

    num_outputs: int
    embed_dim: int = 32
    mlp_dim: int = 64
    patch_size: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = images.astype(self.dtype) / 127.5 - 1.0
        x = nn.Conv(self.embed_dim, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, dtype=self.dtype,
                    kernel_init=_partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                    bias_init=_partitioned(nn.initializers.zeros, ("embed",)), name="patch_embed")(x)
        x = nn.with_logical_constraint(x, ("batch", "height", "width", "embed"))
        x = nn.Dense(self.mlp_dim, dtype=self.dtype,
                     kernel_init=_partitioned(nn.initializers.lecun_normal(), ("embed", "mlp")),
                     bias_init=_partitioned(nn.initializers.zeros, ("mlp",)), name="hidden")(nn.gelu(x))
        x = jnp.mean(nn.gelu(x), axis=(1, 2))
        return nn.Dense(self.num_outputs, dtype=jnp.float32,
                        kernel_init=_partitioned(nn.initializers.zeros, ("mlp", None)),
                        bias_init=_partitioned(nn.initializers.zeros, (None,)), name="head")(x)
