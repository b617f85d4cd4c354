"""The optimizer: AdamW with linear warm-up, cosine decay and global-norm clipping, and
optionally an exponential moving average (EMA) of the parameters kept in its state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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


class ParamsEmaState(NamedTuple):
    count: jax.Array  # updates seen
    ema: Any  # the average, shaped (and sharded) like the parameters


def ema_decay_at(decay: float, count) -> jax.Array:
    """The decay of update `count` (from 0): `min(decay, (1 + count) / (10 + count))`, so
    that the first updates are not pulled towards the initial parameters (as TensorFlow's
    `ExponentialMovingAverage(num_updates=...)`)."""
    count = jnp.asarray(count, jnp.float32)
    return jnp.minimum(decay, (1.0 + count) / (10.0 + count))


def params_ema(decay: float) -> optax.GradientTransformation:
    """Keeps `ema ← d · ema + (1 - d) · params_new` in the optimizer state, where
    `params_new = params + updates`; it must come last in a chain. The updates pass
    through unchanged. Read the average with `averaged_params(opt_state)`."""

    def init(params):
        return ParamsEmaState(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.asarray, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params_ema needs the parameters: call optimizer.update(grads, opt_state, params)")
        d = ema_decay_at(decay, state.count)
        ema = jax.tree.map(lambda e, p, u: d * e + (1 - d) * (p + u), state.ema, params, updates)
        return updates, ParamsEmaState(count=state.count + 1, ema=ema)

    return optax.GradientTransformation(init, update)


def averaged_params(opt_state) -> Any | None:
    """The parameters' EMA held in an optimizer state from `make_optimizer`, or None without one."""
    return optax.tree_utils.tree_get(opt_state, "ema")


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    """Clipping, then AdamW on `learning_rate_schedule`; with `optim.ema_decay > 0` the state
    also keeps an EMA of the parameters (`params_ema`), which inference loads. `optim.mu_dtype`
    ("bfloat16") stores Adam's first moment in that dtype; the second stays in the parameters'."""
    transforms = [
        optax.clip_by_global_norm(optim_config.grad_clip_norm),
        optax.adamw(learning_rate_schedule(optim_config, total_steps), b1=optim_config.b1, b2=optim_config.b2,
                    eps=optim_config.eps, weight_decay=optim_config.weight_decay, mask=_decay_mask,
                    mu_dtype=optim_config.get("mu_dtype") or None),  # `.get`: runs saved before it
    ]
    ema_decay = optim_config.get("ema_decay", 0.0)  # absent from configs saved before it existed
    if ema_decay:
        transforms.append(params_ema(ema_decay))
    return optax.chain(*transforms)
