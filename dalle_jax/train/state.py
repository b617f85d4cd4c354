"""The train state and the pure train step."""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]
# loss_fn(params, batch, rng, *, step, model_state) -> (loss, metrics, model_state)
LossFn = Callable[..., tuple[jax.Array, Metrics, Any]]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue.

    `params` are trained by the optimizer; `model_state` holds the model's other variable
    collections (an EMA codebook, frozen weights of another model), updated only by the
    task's `loss_fn`. `rng` is the run's key, from which step `s` draws `fold_in(rng, s)`,
    so a resumed run draws the same keys as an unbroken one.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array


def create_state(variables: dict, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """A step-0 state from Flax variables: `variables["params"]` is trained, the rest is model state."""
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=optimizer.init(params), rng=rng)


def step_rng(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.rng, state.step)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, Metrics]:
    """One optimizer step: `(state, batch, rng) -> (state, metrics)`, pure.

    `metrics` holds the task's metrics plus `loss` and `grad_norm` (before clipping).
    """

    def objective(params):
        loss, metrics, model_state = loss_fn(params, batch, rng, step=state.step, model_state=state.model_state)
        return loss, (metrics, model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state)
    return new_state, metrics
