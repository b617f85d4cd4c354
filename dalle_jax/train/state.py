"""The train state and the pure train step."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, Metrics]]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: `rng` is the run's key, from which step `s`
    draws `fold_in(rng, s)`, so a resumed run draws the same keys as an unbroken one."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def create_state(params: Any, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params), rng=rng)


def step_rng(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.rng, state.step)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, Metrics]:
    """One optimizer step: `(state, batch, rng) -> (state, metrics)`, pure.

    `metrics` holds the task's metrics plus `loss` and `grad_norm` (before clipping).
    """
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics
