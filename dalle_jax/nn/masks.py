"""Attention masks over `[text tokens ; image tokens]` (DALL·E, appendix B.1).

Position `p < text_length` holds text; position `text_length + g` holds image token `g`,
at grid row `g // width` and column `g % width`. Every mask is causal; text attends to
earlier text, image tokens attend to all text and, among image tokens, to:
- `full`: every earlier image token;
- `row`: the previous `width` image tokens (one row's worth, a sliding window);
- `column`: earlier image tokens in the same column (a multiple of `width` back);
- `conv`: earlier image tokens within a `kernel x kernel` neighbourhood of the grid.
"""

from __future__ import annotations

import functools

import numpy as np

ATTENTION_KINDS: tuple[str, ...] = ("full", "row", "column", "conv")


@functools.lru_cache(maxsize=64)
def attention_mask(kind: str, text_length: int, grid_height: int, grid_width: int, conv_kernel: int = 11) -> np.ndarray:
    """`bool [length, length]` (query, key), `length = text_length + grid_height * grid_width`."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; expected one of {ATTENTION_KINDS}")
    length = text_length + grid_height * grid_width
    query, key = np.arange(length)[:, None], np.arange(length)[None, :]
    causal = key <= query
    g_query, g_key = query - text_length, key - text_length
    image_pair = (g_query >= 0) & (g_key >= 0)
    if kind == "full":
        pattern = np.ones_like(causal)
    elif kind == "row":
        pattern = g_query - g_key <= grid_width
    elif kind == "column":
        pattern = (g_query - g_key) % grid_width == 0
    else:
        half = conv_kernel // 2
        rows = np.abs(g_query // grid_width - g_key // grid_width) <= half
        cols = np.abs(g_query % grid_width - g_key % grid_width) <= half
        pattern = rows & cols
    return causal & (~image_pair | pattern)


def layer_kinds(spec: str | tuple[str, ...] | list[str], depth: int) -> tuple[str, ...]:
    """The mask of each layer.

    `"sparse"` is the paper's pattern: a column layer where `(i - 2) % 4 == 0` (1-based `i`),
    row layers elsewhere, and a convolutional last layer. `"full"` is dense causal attention
    everywhere; otherwise a comma-separated string or sequence with one kind per layer.
    """
    if spec == "sparse":
        kinds = ["column" if (i - 2) % 4 == 0 else "row" for i in range(1, depth + 1)]
        return tuple(kinds[:-1] + ["conv"])
    if spec == "full":
        return ("full",) * depth
    kinds = tuple(spec.split(",") if isinstance(spec, str) else spec)
    if len(kinds) != depth or any(k not in ATTENTION_KINDS for k in kinds):
        raise ValueError(f"attention {spec!r} must be 'sparse', 'full' or {depth} kinds from {ATTENTION_KINDS}")
    return kinds
