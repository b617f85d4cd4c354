"""The train state and the pure train step."""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
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


def microbatch_slices(batch: dict, microbatches: int) -> dict:
    """`[batch, ...]` leaves to `[microbatches, batch / microbatches, ...]`. Slice `i` holds examples
    `i, i + microbatches, ...`: as much of every device's block of the batch as any other slice."""

    def split(x):
        if x.shape[0] % microbatches:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {microbatches} equal microbatches")
        sliced = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(sliced, (None, "batch") + (None,) * (x.ndim - 1))

    return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation, microbatches: int = 1) -> tuple[TrainState, Metrics]:
    """One optimizer step: `(state, batch, rng) -> (state, metrics)`, pure.

    `metrics` holds the task's metrics plus `loss` and `grad_norm` (before clipping). With
    `microbatches > 1`, the loss and gradient are averaged over that many slices of the batch
    (`microbatch_slices`), computed one after the other in a `lax.scan` (slice `i` draws
    `fold_in(rng, i)`, and the model state passes from one slice to the next): for a loss that
    is a mean over examples, the same step as the whole batch at once, in a slice's memory.
    """

    def objective(params, batch, rng, model_state):
        loss, metrics, model_state = loss_fn(params, batch, rng, step=state.step, model_state=model_state)
        return loss, (metrics, model_state)

    gradient = jax.value_and_grad(objective, has_aux=True)
    if microbatches == 1:
        (loss, (metrics, model_state)), grads = gradient(state.params, batch, rng, state.model_state)
    else:
        slices = microbatch_slices(batch, microbatches)

        def accumulate(carry, index_and_slice):
            total, model_state = carry
            index, piece = index_and_slice
            (loss, (metrics, model_state)), grads = gradient(state.params, piece, jax.random.fold_in(rng, index),
                                                             model_state)
            return (jax.tree.map(jnp.add, total, (loss, metrics, grads)), model_state), None

        first = jax.tree.map(lambda x: x[0], slices)
        (loss, (metrics, _)), grads = jax.eval_shape(gradient, state.params, first, rng, state.model_state)
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32)),
                             (loss, metrics, grads))
        (total, model_state), _ = jax.lax.scan(accumulate, (zeros, state.model_state),
                                               (jnp.arange(microbatches), slices))
        loss, metrics, grads = jax.tree.map(lambda x: x / microbatches, total)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads)}
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state)
    return new_state, metrics
