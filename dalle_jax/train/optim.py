"""The optimizer: AdamW with linear warm-up, cosine decay and global-norm clipping."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `learning_rate`, then cosine decay to `end_lr_fraction` of it."""
    warmup = min(optim_config.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim_config.learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=optim_config.learning_rate * optim_config.end_lr_fraction)


def _decay_mask(params):
    """Weight decay on matrices and kernels only, not on biases, scales or embeddings' norms."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(optim_config.grad_clip_norm),
        optax.adamw(learning_rate_schedule(optim_config, total_steps), b1=optim_config.b1, b2=optim_config.b2,
                    eps=optim_config.eps, weight_decay=optim_config.weight_decay, mask=_decay_mask),
    )
