import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle_jax.models import captioner
from dalle_jax.text.tokenizer import EOS_ID, PAD_ID


def tiny(vocab=12, length=6, num_prefix=4):
    return captioner.Captioner(vocab_size=vocab, caption_length=length, num_prefix=num_prefix, embed_dim=32, depth=2,
                               num_heads=2, head_dim=16, mlp_dim=64)


def init(model, features):
    captions = jnp.zeros((features.shape[0], model.caption_length), jnp.int32)
    return model.init(jax.random.key(0), features, captions)["params"]


def test_prefix_lm_mask_matches_loops():
    mask = captioner.prefix_lm_mask(3, 7)
    for q, k in itertools.product(range(7), range(7)):
        assert mask[q, k] == (k <= q or (q < 3 and k < 3)), (q, k)


@pytest.mark.parametrize("num_features", [1, 2, 4])
def test_shapes(num_features):
    model = tiny()
    features = jax.random.normal(jax.random.key(1), (3, num_features, 8))
    params = init(model, features)
    captions = jax.random.randint(jax.random.key(2), (3, 6), 0, 12)
    chex.assert_shape(model.apply({"params": params}, features, captions), (3, 6, 12))
    chex.assert_shape(model.apply({"params": params}, features, method=model.embed_prefix), (3, 4, 32))


def test_prefix_must_divide():
    model = tiny(num_prefix=4)
    with pytest.raises(ValueError, match="num_prefix=4 is not a multiple of the 3"):
        init(model, jnp.zeros((1, 3, 8)))


def test_captions_are_causal_in_tokens():
    """Changing caption token j changes no prediction at or before j."""
    model = tiny()
    features = jax.random.normal(jax.random.key(1), (1, 1, 8))
    params = init(model, features)
    captions = jnp.array([[5, 6, 7, 8, 9, 10]])
    changed = captions.at[0, 3].set(11)
    a, b = (model.apply({"params": params}, features, c) for c in (captions, changed))
    chex.assert_trees_all_close(a[:, :4], b[:, :4], atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_decoding_equals_recomputation(temperature):
    model = tiny()
    features = jax.random.normal(jax.random.key(1), (4, 1, 8))
    params = init(model, features)
    tokens, step_logits = jax.jit(lambda f, r: captioner.sample_captions(
        model, params, f, r, temperature=temperature, return_logits=True))(features, jax.random.key(3))
    chex.assert_shape(tokens, (4, 6))
    full = model.apply({"params": params}, features, tokens)  # teacher-forced on the decoded tokens
    chex.assert_trees_all_close(jnp.swapaxes(step_logits, 0, 1), full, atol=1e-5)
    if temperature == 0:
        np.testing.assert_array_equal(tokens[:, 0], jnp.argmax(full[:, 0], -1))


def test_after_end_of_text_only_padding():
    tokens = jnp.array([[4, EOS_ID], [EOS_ID, 7], [5, 6]])
    finished = jnp.zeros((3,), bool)
    out = []
    for j in range(2):
        token, finished = captioner._after_end(tokens[:, j], finished)
        out.append(token)
    np.testing.assert_array_equal(jnp.stack(out, 1), [[4, EOS_ID], [EOS_ID, PAD_ID], [5, 6]])


def _exhaustive_best(model, params, features, vocab, length):
    """The most likely caption by scoring every sequence (PAD forced after EOS) in one batch."""
    sequences = [list(seq) for seq in itertools.product(range(vocab), repeat=length)
                 if EOS_ID not in seq or all(t == PAD_ID for t in seq[seq.index(EOS_ID) + 1:])]
    batch = jnp.array(sequences)
    log_probs = jax.nn.log_softmax(model.apply({"params": params}, jnp.repeat(features, len(sequences), 0), batch))
    token_log_probs = np.asarray(jnp.take_along_axis(log_probs, batch[..., None], -1)[..., 0])
    scores = [sum(row[: seq.index(EOS_ID) + 1 if EOS_ID in seq else length]) for seq, row in
              zip(sequences, token_log_probs)]
    best = int(np.argmax(scores))
    return sequences[best], scores[best]


def test_beam_search_is_exact_when_the_beam_holds_every_prefix():
    vocab, length = 6, 3
    model = tiny(vocab=vocab, length=length, num_prefix=2)
    features = jax.random.normal(jax.random.key(4), (1, 1, 8))
    params = init(model, features)
    tokens, score = captioner.beam_search_captions(model, params, features, beam_size=vocab ** (length - 1),
                                                   length_penalty=0.0)
    best, best_score = _exhaustive_best(model, params, features, vocab, length)
    assert tokens[0].tolist() == best
    np.testing.assert_allclose(score[0], best_score, rtol=1e-5)


def test_beam_of_one_is_greedy():
    model = tiny()
    features = jax.random.normal(jax.random.key(5), (3, 1, 8))
    params = init(model, features)
    greedy = captioner.sample_captions(model, params, features, jax.random.key(0), temperature=0.0)
    beam, _ = captioner.beam_search_captions(model, params, features, beam_size=1)
    np.testing.assert_array_equal(beam, greedy)


def test_patch_coordinates():
    coords = captioner.patch_coordinates(1 + 9, 3)
    chex.assert_shape(coords, (10, 2))
    np.testing.assert_array_equal(coords[0], [0, 0])  # the class token has none
    np.testing.assert_array_equal(coords[1:4], [[-1, -1], [-1, 0], [-1, 1]])  # first row, left to right
    np.testing.assert_array_equal(coords[1::3, 0], [-1, 0, 1])  # rows go down
    with pytest.raises(ValueError, match="cannot hold a 3×3 patch grid"):
        captioner.patch_coordinates(8, 3)


def test_prefix_carries_patch_coordinates():
    """With a grid, patch tokens of identical features differ by position, linearly in (row, column)."""
    model = captioner.Captioner(vocab_size=12, caption_length=6, num_prefix=5, embed_dim=32, depth=1, num_heads=2,
                                head_dim=16, mlp_dim=64, grid_size=2)
    features = jnp.ones((1, 5, 8))
    params = nn.unbox(init(model, features))
    prefix = model.apply({"params": params}, features, method=model.embed_prefix)[0] - params["prefix_position"]
    # Patches (0,0), (0,1), (1,0), (1,1): the column step is the same on both rows.
    chex.assert_trees_all_close(prefix[2] - prefix[1], prefix[4] - prefix[3], atol=1e-6)
    assert not np.allclose(prefix[2], prefix[1])
