import chex
import numpy as np
import pytest

from dalle_jax.data import shapes
from dalle_jax.text import tokenizer


@pytest.fixture(scope="module")
def captions():
    examples = [shapes.make_example(0, "train", i) for i in range(1500)]
    return [t for e in examples for t in (e["caption"], e["alt_text"])]


@pytest.fixture(scope="module")
def tok(captions):
    return tokenizer.train_tokenizer(captions, vocab_size=512)


def test_round_trip_on_unseen_captions(tok):
    held = [shapes.make_example(0, "validation", i)["caption"] for i in range(300)]
    ids = tok.encode(held, 32)
    chex.assert_shape(ids, (300, 32))
    assert ids.dtype == np.int32
    assert tok.decode(ids) == held


def test_fixed_length_layout(tok):
    ids = tok.encode("a small red circle", 16)
    length = int(np.argmax(ids == tokenizer.EOS_ID))
    assert 0 < length < 16
    assert np.all(ids[:length] > tokenizer.EOS_ID)  # no reserved id inside the text
    assert np.all(ids[length + 1:] == tokenizer.PAD_ID)


def test_case_folding(tok):
    np.testing.assert_array_equal(tok.encode("A Small RED Circle", 16), tok.encode("a small red circle", 16))


def test_truncation_warns_with_the_prompt(tok):
    prompt = "a large red circle to the left of a small blue square"
    with pytest.warns(UserWarning, match="truncated.*a large red circle to the left"):
        ids = tok.encode(prompt, 6)
    assert ids[-1] == tokenizer.EOS_ID
    assert tok.decode(ids) == tok.decode(tok.encode(prompt, 64)[:5])


def test_vocabulary_is_bounded_and_compact(tok, captions):
    assert tok.vocab_size <= 512
    lengths = [(row > 0).sum() for row in tok.encode(captions[:200], 64)]
    words = [len(c.split()) + 1 for c in captions[:200]]
    assert np.mean(lengths) <= np.mean(words) + 1  # BPE keeps whole words of this small language


def test_save_and_load(tok, tmp_path):
    path = tok.save(tmp_path)
    loaded = tokenizer.TextTokenizer.load(tmp_path)
    assert path.name == tokenizer.MODEL_FILE
    np.testing.assert_array_equal(loaded.encode("a small red circle", 8), tok.encode("a small red circle", 8))
    with pytest.raises(FileNotFoundError, match="train-text-tokenizer"):
        tokenizer.TextTokenizer.load(tmp_path / "missing")
