"""OpenAI CLIP's byte-level BPE, through Hugging Face `tokenizers`, for imported CLIP models.

A snapshot's `tokenizer.json` is read as it is; a snapshot with only `vocab.json` and
`merges.txt` gets the pipeline `transformers.CLIPTokenizer` builds from them: NFC, runs of
white space to one space, lower case; split into `'s 't 're 've 'm 'll 'd`, letter runs, single
digits and runs of other non-space characters; byte-level BPE whose word-final pieces end in
`</w>`; `<|startoftext|>` before and `<|endoftext|>` after. The project's own models keep the
sentencepiece tokenizer (`text/tokenizer.py`); this one serves the CLIP it came with.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import warnings
from typing import Sequence

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from dalle_jax.text.tokenizer import decode_rows, truncation_warning, valid_text

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_JSON = "tokenizer.json"
VOCAB_FILES = ("vocab.json", "merges.txt")
_WORDS = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def from_vocab_and_merges(vocab_file: str | pathlib.Path, merges_file: str | pathlib.Path) -> tokenizers.Tokenizer:
    """CLIP's tokenizer from `vocab.json` and `merges.txt` (the pipeline `transformers` builds)."""
    vocab = json.loads(pathlib.Path(vocab_file).read_text(encoding="utf-8"))
    for token in (BOS, EOS):
        if token not in vocab:
            raise ValueError(f"{vocab_file} has no {token!r}: not a CLIP vocabulary")
    lines = pathlib.Path(merges_file).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    tokenizer = tokenizers.Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                                         end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_WORDS), behavior="removed", invert=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([BOS, EOS])
    tokenizer.post_processor = processors.RobertaProcessing((EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False,
                                                            add_prefix_space=False)
    return tokenizer


class ClipTokenizer:
    """Fixed-length CLIP token ids: `<|startoftext|>`, the text's pieces, `<|endoftext|>`, then
    `<|endoftext|>` as padding (CLIP pools at the first one, and its text attention is causal,
    so what follows it changes nothing)."""

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        tokenizer.no_truncation()  # `encode` fits each text to its length itself
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.eos_id = tokenizer.token_to_id(EOS)
        self.bos_id = tokenizer.token_to_id(BOS)
        if self.eos_id is None or self.bos_id is None:
            raise ValueError(f"not a CLIP tokenizer: it has no {BOS!r} or {EOS!r} token")

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> ClipTokenizer:
        """From a directory with `tokenizer.json`, or with `vocab.json` and `merges.txt`."""
        directory = pathlib.Path(directory)
        if (directory / TOKENIZER_JSON).is_file():
            return cls(tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_JSON)))
        if all((directory / name).is_file() for name in VOCAB_FILES):
            return cls(from_vocab_and_merges(*(directory / name for name in VOCAB_FILES)))
        raise FileNotFoundError(f"no CLIP tokenizer in {directory}: expected {TOKENIZER_JSON}, or "
                                f"{' and '.join(VOCAB_FILES)}")

    @staticmethod
    def copy_files(source: str | pathlib.Path, destination: str | pathlib.Path) -> list[str]:
        """Copies the tokenizer files `load` reads from `source` into `destination`; their names."""
        source, destination = pathlib.Path(source), pathlib.Path(destination)
        names = [TOKENIZER_JSON] if (source / TOKENIZER_JSON).is_file() else list(VOCAB_FILES)
        for name in names:
            shutil.copyfile(source / name, destination / name)
        return names

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: str | Sequence[str], length: int) -> np.ndarray:
        """`int32 [batch, length]` ids (`[length]` for one string). A text longer than
        `length - 2` pieces is cut to fit, keeping its `<|endoftext|>`, with a warning naming it."""
        single = isinstance(texts, str)
        texts = [valid_text(t) for t in ([texts] if single else texts)]
        ids = np.full((len(texts), length), self.eos_id, np.int32)
        for row, (text, encoding) in enumerate(zip(texts, self._tokenizer.encode_batch(texts))):
            pieces = encoding.ids
            if len(pieces) > length:
                warnings.warn(truncation_warning(text, len(pieces), length), stacklevel=2)
                pieces = pieces[: length - 1] + [self.eos_id]
            ids[row, : len(pieces)] = pieces
        return ids[0] if single else ids

    def decode(self, ids: np.ndarray) -> str | list[str]:
        """Text between `<|startoftext|>` and the first `<|endoftext|>` of each row."""
        decode_row = lambda row: self._tokenizer.decode([i for i in row if i != self.bos_id]).replace("</w>", " ")
        return decode_rows(ids, self.eos_id, lambda row: decode_row(row).strip())
