"""The train step itself: gradient accumulation over microbatches, and mixed precision."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dalle_jax.models.dalle import DalleTransformer
from dalle_jax.nn import masks
from dalle_jax.tasks.dalle import DalleTask
from dalle_jax.train import optim
from dalle_jax.train.state import create_state, microbatch_slices, train_step

TEXT_LENGTH, GRID, BATCH = 6, (3, 4), 8
OPTIM = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, end_lr_fraction=0.1, grad_clip_norm=1.0,
                                       b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.01, ema_decay=0.0, mu_dtype=""))


def dalle_task(dtype=jnp.float32, attention="sparse"):
    model = DalleTransformer(text_vocab_size=20, image_vocab_size=16, text_length=TEXT_LENGTH, grid_size=GRID,
                             embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_dim=64,
                             attention_kinds=masks.layer_kinds(attention, 2), conv_kernel=3, dtype=dtype)
    loss_weights = ml_collections.ConfigDict({"loss": {"text_weight": 1 / 8, "image_weight": 7 / 8}})
    return DalleTask(model, None, None, None, None, loss_weights)


def batch():
    rng = np.random.default_rng(0)
    return {"text": jnp.asarray(rng.integers(2, 20, (BATCH, TEXT_LENGTH)), jnp.int32),
            "image_tokens": jnp.asarray(rng.integers(0, 16, (BATCH, GRID[0] * GRID[1])), jnp.int32)}


def first_state(task, optimizer):
    return create_state(nn.unbox(task.init(jax.random.key(0), batch())), optimizer, jax.random.key(1))


def test_microbatch_slices_take_from_every_block_of_the_batch():
    sliced = microbatch_slices({"x": jnp.arange(8)}, 4)["x"]
    np.testing.assert_array_equal(sliced, [[0, 4], [1, 5], [2, 6], [3, 7]])
    with pytest.raises(ValueError, match="a batch of 8 does not split into 3 equal microbatches"):
        microbatch_slices({"x": jnp.arange(8)}, 3)


def test_accumulated_microbatches_make_the_big_batch_step():
    task, optimizer = dalle_task(), optim.make_optimizer(OPTIM, 10)
    step = lambda microbatches: jax.jit(functools.partial(train_step, loss_fn=task.loss_fn, optimizer=optimizer,
                                                          microbatches=microbatches))
    state = first_state(task, optimizer)
    whole, whole_metrics = step(1)(state, batch(), jax.random.key(2))
    sliced, sliced_metrics = step(4)(state, batch(), jax.random.key(2))
    for name in ("loss", "grad_norm", "text_loss", "image_loss", "image_accuracy"):
        np.testing.assert_allclose(sliced_metrics[name], whole_metrics[name], rtol=2e-6, err_msg=name)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), whole.params, state.params)
    assert np.median(jax.tree.leaves(moved)) > 5e-3  # Adam moved the parameters by about the learning rate...
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), sliced.params, whole.params)  # ...alike
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8), sliced.opt_state, whole.opt_state)


@pytest.mark.parametrize("attention", ["sparse", "full"])  # masked layers; plain causal ones (no mask array)
def test_a_bfloat16_step_follows_the_float32_one_and_keeps_float32_parameters(attention):
    optimizer = optim.make_optimizer(ml_collections.ConfigDict(OPTIM.to_dict() | {"mu_dtype": "bfloat16"}), 10)
    results = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        task = dalle_task(dtype, attention)
        start = first_state(task, optimizer)  # the same float32 parameters for both: init does not depend on dtype
        results[dtype] = jax.jit(functools.partial(train_step, loss_fn=task.loss_fn, optimizer=optimizer))(
            start, batch(), jax.random.key(2))
    (full_state, full), (half_state, half) = results[jnp.float32], results[jnp.bfloat16]
    np.testing.assert_allclose(half["loss"], full["loss"], rtol=2e-3)
    np.testing.assert_allclose(half["grad_norm"], full["grad_norm"], rtol=1e-2)
    assert half["loss"].dtype == jnp.float32
    assert {x.dtype for x in jax.tree.leaves(half_state.params)} == {jnp.dtype(jnp.float32)}
    adam = optax.tree_utils.tree_get(half_state.opt_state, "mu"), optax.tree_utils.tree_get(half_state.opt_state, "nu")
    assert {x.dtype for x in jax.tree.leaves(adam[0])} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam[1])} == {jnp.dtype(jnp.float32)}
    # Adam's first update is about ±learning rate per parameter: near-zero gradients may flip sign.
    update = lambda state: jnp.concatenate([(a - b).ravel() for a, b in zip(jax.tree.leaves(state.params),
                                                                           jax.tree.leaves(start.params))])
    half_update, full_update = update(half_state), update(full_state)
    assert half_update @ full_update / (jnp.linalg.norm(half_update) * jnp.linalg.norm(full_update)) > 0.98
