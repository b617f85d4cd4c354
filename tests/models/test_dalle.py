import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dalle_jax.models.dalle import DalleTransformer, image_log_likelihood, sample_best_of, sample_image_tokens
from dalle_jax.nn import masks
from dalle_jax.text.tokenizer import EOS_ID, PAD_ID

TEXT_LENGTH, GRID = 6, (3, 4)


def tiny_model(attention="sparse", depth=4):
    return DalleTransformer(text_vocab_size=20, image_vocab_size=16, text_length=TEXT_LENGTH, grid_size=GRID,
                            embed_dim=32, depth=depth, num_heads=2, head_dim=16, mlp_dim=64,
                            attention_kinds=masks.layer_kinds(attention, depth), conv_kernel=3)


def text_batch(batch):
    rng = np.random.default_rng(0)
    text = rng.integers(4, 20, (batch, TEXT_LENGTH)).astype(np.int32)
    text[:, 3] = EOS_ID
    text[:, 4:] = PAD_ID
    return jnp.asarray(text)


@pytest.fixture(scope="module")
def model_and_params():
    model = tiny_model()
    tokens = jnp.zeros((1, TEXT_LENGTH + 12 - 1), jnp.int32)
    return model, nn.unbox(model.init(jax.random.key(0), tokens))["params"]


def test_shapes(model_and_params):
    model, params = model_and_params
    tokens = jnp.concatenate([text_batch(3), jnp.ones((3, 11), jnp.int32)], axis=1)
    hidden = model.apply({"params": params}, tokens)
    chex.assert_shape(hidden, (3, TEXT_LENGTH + 11, 32))
    chex.assert_shape(model.apply({"params": params}, hidden, method="image_logits"), (3, TEXT_LENGTH + 11, 16))
    chex.assert_shape(model.apply({"params": params}, hidden, method="text_logits"), (3, TEXT_LENGTH + 11, 20))
    chex.assert_shape(params["pad_embedding"], (TEXT_LENGTH, 32))
    chex.assert_shape(params["row_position"], (GRID[0], 32))
    chex.assert_shape(params["column_position"], (GRID[1], 32))


def test_padding_is_learned_per_position(model_and_params):
    model, params = model_and_params
    tokens = jnp.full((1, TEXT_LENGTH), PAD_ID, jnp.int32)
    embedded = model.apply({"params": params}, tokens, 0, method="embed")[0]
    expected = params["pad_embedding"] + params["text_position"]
    np.testing.assert_allclose(embedded, expected, rtol=1e-6)


def test_cached_sampling_matches_full_recomputation(model_and_params):
    model, params = model_and_params
    text = text_batch(2)
    tokens, logits = sample_image_tokens(model, params, text, jax.random.key(1), return_logits=True)
    chex.assert_shape(tokens, (2, 12))
    # One teacher-forced pass over the sampled sequence gives every step's logits.
    sequence = jnp.concatenate([text, tokens], axis=1)[:, :-1]
    hidden = model.apply({"params": params}, sequence)
    full = model.apply({"params": params}, hidden[:, TEXT_LENGTH - 1:], method="image_logits")
    np.testing.assert_allclose(np.asarray(logits).transpose(1, 0, 2), full, atol=1e-4, rtol=1e-4)
    uncached = sample_image_tokens(model, params, text, jax.random.key(1), use_cache=False)
    np.testing.assert_array_equal(uncached, tokens)


def test_guidance_at_scale_one_is_the_conditional_model(model_and_params):
    model, params = model_and_params
    text = text_batch(2)
    empty = jnp.array([EOS_ID] + [PAD_ID] * (TEXT_LENGTH - 1), jnp.int32)
    key = jax.random.key(2)
    plain, plain_logits = sample_image_tokens(model, params, text, key, return_logits=True)
    guided, guided_logits = sample_image_tokens(model, params, text, key, empty_text=empty, guidance_scale=1.0,
                                                return_logits=True)
    np.testing.assert_allclose(guided_logits, plain_logits, atol=1e-5)
    np.testing.assert_array_equal(guided, plain)
    strong = sample_image_tokens(model, params, text, key, empty_text=empty, guidance_scale=3.0, return_logits=True)[1]
    assert not np.allclose(strong, plain_logits, atol=1e-3)


def test_log_likelihood_sums_the_log_probabilities_of_the_sampled_tokens(model_and_params):
    model, params = model_and_params
    text = text_batch(2)
    tokens, logits = sample_image_tokens(model, params, text, jax.random.key(5), return_logits=True)
    log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits).transpose(1, 0, 2)))  # [batch, steps, vocab]
    expected = np.take_along_axis(log_probs, np.asarray(tokens)[..., None], axis=-1).sum(axis=(1, 2))
    likelihood = image_log_likelihood(model, params, text, tokens)
    chex.assert_shape(likelihood, (2,))
    np.testing.assert_allclose(likelihood, expected, rtol=1e-5, atol=1e-4)


def test_best_of_keeps_the_most_likely_candidate(model_and_params):
    model, params = model_and_params
    text, key, candidates = text_batch(3), jax.random.key(6), 4
    best = sample_best_of(model, params, text, key, candidates=candidates, temperature=2.0)
    chex.assert_shape(best, (3, 12))
    drawn = sample_image_tokens(model, params, jnp.repeat(text, candidates, axis=0), key, temperature=2.0)
    for i in range(3):
        rows = np.asarray(drawn[candidates * i: candidates * (i + 1)])
        assert len({row.tobytes() for row in rows}) == candidates  # distinct candidates, so the choice matters
        scores = [float(image_log_likelihood(model, params, text[i: i + 1], row[None])[0]) for row in rows]
        np.testing.assert_array_equal(best[i], rows[int(np.argmax(scores))])


def test_masks_reach_the_model(model_and_params):
    """Changing an image token outside a row layer's window leaves a 1-layer row model's output unchanged."""
    model = tiny_model("row", depth=1)
    tokens = jnp.concatenate([text_batch(1), jnp.arange(11, dtype=jnp.int32)[None] % 16], axis=1)
    params = nn.unbox(model.init(jax.random.key(3), tokens))["params"]
    hidden = model.apply({"params": params}, tokens)
    changed = tokens.at[0, TEXT_LENGTH].set(7)  # image token 0
    hidden2 = model.apply({"params": params}, changed)
    last = TEXT_LENGTH + 10  # image token 10: token 0 is more than a row (4) back
    np.testing.assert_allclose(hidden[0, last], hidden2[0, last], atol=1e-6)
    assert not np.allclose(hidden[0, TEXT_LENGTH + 4], hidden2[0, TEXT_LENGTH + 4], atol=1e-4)


def test_tiny_model_overfits_a_handful_of_examples():
    model = tiny_model(depth=2)
    rng = np.random.default_rng(4)
    sequences = jnp.concatenate([text_batch(4), jnp.asarray(rng.integers(0, 16, (4, 12)), jnp.int32)], axis=1)
    params = nn.unbox(model.init(jax.random.key(4), sequences[:, :-1]))["params"]
    optimizer = optax.adam(3e-3)

    def loss_fn(params):
        hidden = model.apply({"params": params}, sequences[:, :-1])
        logits = model.apply({"params": params}, hidden[:, TEXT_LENGTH - 1:], method="image_logits")
        return optax.softmax_cross_entropy_with_integer_labels(logits, sequences[:, TEXT_LENGTH:]).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for _ in range(300):
        params, opt_state, loss = step(params, opt_state)
    assert float(loss) < 0.05  # from log(16) = 2.77


def test_scanned_and_rematerialised_layers_compute_the_same_model(model_and_params, remat="dots"):
    """`scan_layers` stacks the blocks' parameters along a leading axis and `remat` recomputes in
    the backward pass: the same logits and gradients as the plain model, and the same samples."""
    model, params = model_and_params
    scanned = model.clone(scan_layers=True, remat=remat)
    blocks = [params[f"block_{i}"] for i in range(model.depth)]
    stacked = {k: v for k, v in params.items() if not k.startswith("block_")}
    stacked["blocks"] = jax.tree.map(lambda *layers: jnp.stack(layers), *blocks)
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(  # the layout `init` gives the scanned model
        jnp.shape, nn.unbox(jax.eval_shape(scanned.init, jax.random.key(0), jnp.zeros((1, 17), jnp.int32)))["params"])

    text = text_batch(2)
    tokens = jnp.concatenate([text, jnp.arange(12, dtype=jnp.int32)[None].repeat(2, 0) % 16], axis=1)
    loss = lambda m, p: image_log_likelihood(m, p, text, tokens[:, TEXT_LENGTH:]).sum()
    value, grads = jax.value_and_grad(lambda p: loss(model, p))(params)
    scanned_value, scanned_grads = jax.value_and_grad(lambda p: loss(scanned, p))(stacked)
    np.testing.assert_allclose(scanned_value, value, rtol=1e-5)
    for i in range(model.depth):
        chex.assert_trees_all_close(jax.tree.map(lambda g: g[i], scanned_grads["blocks"]), grads[f"block_{i}"],
                                    atol=1e-5)
    chex.assert_trees_all_close(scanned_grads["image_head"], grads["image_head"], atol=1e-5)
    np.testing.assert_array_equal(sample_image_tokens(scanned, stacked, text, jax.random.key(1)),
                                  sample_image_tokens(model, params, text, jax.random.key(1)))  # a stacked cache
