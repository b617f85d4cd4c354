"""Whatever a user pastes as a prompt encodes to fixed-length ids ending in the end token, for
both tokenizers (hypothesis: derandomized, so every run tries the same examples)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalle_jax.text import tokenizer
from dalle_jax.text.clip_tokenizer import ClipTokenizer
from tests.weights import parity

# Every code point, lone surrogates and controls (NUL among them) included; right-to-left marks and
# mixed scripts come with them. Plus the shapes hypothesis rarely reaches alone.
ANY_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=200),
    st.sampled_from(["", " ", "\t\n \u00a0", "\x00", "\ud800", "\udfff lone", "\u202eRTL\u202c and עברית ومعاً",
                     "🐱" * 300, "x" * 100_000]))
LENGTH = 16


@pytest.fixture(scope="module")
def tokenizers():
    sentencepiece = tokenizer.train_tokenizer(["a small red circle above a large blue square"] * 20, 64)
    return sentencepiece, ClipTokenizer.load(parity.FIXTURES / "clip_snapshot")


@settings(max_examples=300, derandomize=True, deadline=None)
@given(text=ANY_TEXT)
def test_any_prompt_encodes_to_fixed_length_ids(tokenizers, text):
    for tok, end in ((tokenizers[0], tokenizer.EOS_ID), (tokenizers[1], tokenizers[1].eos_id)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ids = tok.encode(text, LENGTH)
        assert ids.shape == (LENGTH,) and ids.dtype == np.int32
        assert end in ids.tolist() and 0 <= ids.min() and ids.max() < tok.vocab_size
        assert all(len(str(w.message)) < 200 for w in caught)  # a 100,000-character prompt is not echoed whole
        assert isinstance(tok.decode(ids), str)


def test_an_empty_prompt_is_the_end_token_alone(tokenizers):
    """The documented rule: "" is the unconditional caption guidance samples against."""
    sentencepiece, clip = tokenizers
    assert sentencepiece.encode("", 4).tolist() == [tokenizer.EOS_ID] + [tokenizer.PAD_ID] * 3
    assert clip.encode("", 4).tolist() == [clip.bos_id] + [clip.eos_id] * 3
