"""BPE text tokenizer (sentencepiece), trained from a data set's captions.

Ids 0-3 are reserved: `PAD_ID`, `UNK_ID`, `BOS_ID`, `EOS_ID`. Text is case-folded
(NFKC + lower case), so prompts typed with capitals map to the captions' vocabulary.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
MODEL_FILE = "text_tokenizer.model"


def valid_text(text: str) -> str:
    """`text` with what cannot be UTF-8 (lone surrogates, as an undecodable command-line argument
    brings) replaced by U+FFFD, which every tokenizer reads."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def truncation_warning(text: str, pieces: int, length: int) -> str:
    shown = text if len(text) <= 80 else f"{text[:80]}… ({len(text):,} characters)"
    return f"text truncated from {pieces} to {length} tokens: {shown!r}"


class TextTokenizer:
    """Fixed-length encoding and decoding with a trained sentencepiece model."""

    def __init__(self, model_proto: bytes):
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.model_proto = model_proto

    @classmethod
    def load(cls, path: str | pathlib.Path) -> TextTokenizer:
        path = pathlib.Path(path)
        if path.is_dir() or not path.suffix:  # a work dir, made or not
            path = path / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no text tokenizer at {path}; run `python run.py train-text-tokenizer` first")
        return cls(path.read_bytes())

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        path.write_bytes(self.model_proto)
        return path

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, texts: str | Sequence[str], length: int) -> np.ndarray:
        """`int32 [batch, length]` ids: the text's pieces, then `EOS_ID`, then `PAD_ID`s.

        A text longer than `length - 1` pieces is cut to fit (its last id stays `EOS_ID`)
        with a warning that names it.
        """
        single = isinstance(texts, str)
        texts = [valid_text(t) for t in ([texts] if single else texts)]
        ids = np.full((len(texts), length), PAD_ID, np.int32)
        for row, (text, pieces) in enumerate(zip(texts, self._processor.encode(texts))):
            if len(pieces) >= length:
                warnings.warn(truncation_warning(text, len(pieces) + 1, length), stacklevel=2)
                pieces = pieces[: length - 1]
            ids[row, : len(pieces) + 1] = pieces + [EOS_ID]
        return ids[0] if single else ids

    def decode(self, ids: np.ndarray) -> str | list[str]:
        """Text up to the first `EOS_ID` of each row (`[length]` gives one string)."""
        return decode_rows(ids, EOS_ID, lambda row: self._processor.decode([i for i in row if i > EOS_ID]))


def decode_rows(ids: np.ndarray, eos_id: int, decode_row: Callable[[list[int]], str]) -> str | list[str]:
    """`decode_row` of each row of `ids` cut before its first `eos_id` (`[length]` gives one string)."""
    ids = np.asarray(ids)
    rows = ids[None] if ids.ndim == 1 else ids
    texts = [decode_row(row[: row.index(eos_id)] if eos_id in row else row) for row in rows.tolist()]
    return texts[0] if ids.ndim == 1 else texts


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> TextTokenizer:
    """Trains a BPE model; `vocab_size` is an upper bound (small corpora yield fewer pieces)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="nmt_nfkc_cf",
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, num_threads=1, minloglevel=2,
    )
    return TextTokenizer(model.getvalue())


def train_from_source(source, vocab_size: int, fields: Sequence[str] = ("caption", "alt_text")) -> TextTokenizer:
    """`train_tokenizer` on the `fields` captions (those the examples have) of every example of a
    random-access source."""
    fields = [field for field in fields if field in source[0]]
    return train_tokenizer((source[i][field] for i in range(len(source)) for field in fields), vocab_size)
