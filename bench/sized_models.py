"""The project's own tasks at the sizes the benches measure: a DALL·E transformer and an unCLIP
decoder of any size, each as `(config, task, example)` for the trainer's `sharded_state_layout`
and `make_step_fn` (no data set, tokenizer or CLIP is read: the task only computes its loss); and
how those benches report a row.

Importing this sets nothing (the benches choose their devices before JAX starts).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from dalle_jax.config import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIP_EMBEDDING = 768  # ViT-L/14's, the paper's


def dalle(model: dict, batch_size: int, *, text_length: int = 256, grid: int = 32):
    """The transformer of `configs/shapes_dalle.py:paper` (16,384 text and 8,192 image codes; the 12.3B
    model itself when `model` is empty) with the `model.*` keys of `model`, over `[text_length text ;
    grid × grid image tokens]`, at a global batch of `batch_size`."""
    from dalle_jax.tasks.dalle import DalleTask, build_transformer

    overrides = {f"model.{key}": value for key, value in model.items()}
    config = load_config(str(REPO / "configs/shapes_dalle.py:paper"),
                         {"train.batch_size": batch_size, "text.max_length": text_length, "data.image_size": 8 * grid,
                          **overrides})
    transformer = build_transformer(config, config.text.vocab_size, (grid, grid))
    example = {"text": np.zeros((text_length,), np.int32), "image_tokens": np.zeros((grid * grid,), np.int32)}
    return config, DalleTask(transformer, None, None, None, None, config), example


def decoder(model: dict, batch_size: int, *, image_size: int = 64, caption_length: int = 128, vocab: int = 16_384):
    """An unCLIP decoder (`configs/shapes_unclip.py`'s, with the `decoder.model.*` keys of `model`) for
    `image_size`² images, a caption encoder of `text_width` × `text_depth` over `caption_length`
    tokens of `vocab`, and ViT-L/14-sized CLIP image embeddings, at a global batch of `batch_size`."""
    from dalle_jax.tasks.decoder import DecoderTask, build_decoder, schedule_of

    overrides = {f"decoder.model.{key}": value for key, value in model.items()}
    config = load_config(str(REPO / "configs/shapes_unclip.py"),
                         {"train.batch_size": batch_size, "text.max_length": caption_length,
                          "decoder.image_size": image_size, **overrides})
    unet_decoder = build_decoder(config, vocab, text_num_heads=config.decoder.model.text_width // 64)
    example = {"image": np.zeros((image_size, image_size, 3), np.float32),
               "caption": np.zeros((caption_length,), np.int32),
               "image_embedding": np.zeros((CLIP_EMBEDDING,), np.float32)}
    return config, DecoderTask(unet_decoder, schedule_of(config.decoder), None, None, config), example


def emit(row: dict, out: str = "") -> None:
    """One JSON line on stdout and, with `out`, appended to that file."""
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as file:
            file.write(json.dumps(row) + "\n")


def random_batch(example: dict, batch_size: int, rng: np.random.Generator, *, vocab: int = 512) -> dict:
    """A batch shaped like `example`: token ids in `[4, vocab)`, floats from a unit normal."""
    def draw(value):
        shape = (batch_size, *value.shape)
        if value.dtype == np.int32:
            return rng.integers(4, vocab, shape).astype(np.int32)
        return rng.standard_normal(shape).astype(value.dtype)

    return {key: draw(value) for key, value in example.items()}
