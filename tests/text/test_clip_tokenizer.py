"""CLIP's BPE through `tokenizers`, against `transformers.CLIPTokenizer`'s ids (fixtures), read
from a snapshot's tokenizer.json and rebuilt from vocab.json and merges.txt alone."""

import numpy as np
import pytest

from dalle_jax.text.clip_tokenizer import BOS, EOS, ClipTokenizer
from tests.weights import parity


@pytest.fixture(scope="module")
def reference_ids():
    return np.load(parity.FIXTURES / "clip_reference.npz")["token_ids"]


@pytest.mark.parametrize("files", ["clip_snapshot", "clip_snapshot_bpe"])  # tokenizer.json; vocab.json + merges.txt
def test_ids_of_awkward_texts_match_transformers(files, reference_ids):
    tokenizer = ClipTokenizer.load(parity.FIXTURES / files)
    with pytest.warns(UserWarning, match="text truncated from 485 to 77 tokens"):
        ids = tokenizer.encode(parity.AWKWARD_TEXTS, 77)
    np.testing.assert_array_equal(ids, reference_ids)
    assert ids.dtype == np.int32 and ids.shape == (len(parity.AWKWARD_TEXTS), 77)


def test_layout_truncation_and_decoding():
    tokenizer = ClipTokenizer.load(parity.FIXTURES / "clip_snapshot")
    ids = tokenizer.encode("A Red  Circle", 8)
    end = int(np.argmax(ids == tokenizer.eos_id))
    assert ids[0] == tokenizer.bos_id and 1 < end < 8 and np.all(ids[end:] == tokenizer.eos_id)  # padded with it
    assert tokenizer.decode(ids) == "a red circle"  # case and spaces folded, as CLIP reads them
    with pytest.warns(UserWarning, match="truncated"):
        cut = tokenizer.encode("one two three four five six seven eight", 5)
    assert cut[0] == tokenizer.bos_id and cut[-1] == tokenizer.eos_id and len(set(cut[1:-1])) == 3
    assert tokenizer.encode("", 4).tolist() == [tokenizer.bos_id] + [tokenizer.eos_id] * 3
    assert (tokenizer.bos_id, tokenizer.eos_id) == (tokenizer._tokenizer.token_to_id(BOS),
                                                    tokenizer._tokenizer.token_to_id(EOS))


def test_missing_files_are_named(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="expected tokenizer.json, or vocab.json and merges.txt"):
        ClipTokenizer.load(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="vocab.json has no '<|startoftext|>'"):
        ClipTokenizer.load(tmp_path)
