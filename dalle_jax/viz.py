"""PNG grids of images with captions, for people who would rather look than read."""

from __future__ import annotations

import pathlib
import textwrap
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def tile_scale(image_size: int) -> int:
    """How much grids enlarge images of this side: tiles of at least 96 pixels (32 → 3, 64 → 2), never shrunk."""
    return max(1, -(-96 // image_size))


def image_grid(images: Sequence[np.ndarray], labels: Sequence[str] = (), *, columns: int = 8,
               scale: int = 2, label_lines: int = 3) -> Image.Image:
    """Tiles `uint8 [h, w, 3]` images (upscaled by `scale`) with a wrapped label under each."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    height, width = images[0].shape[:2]
    tile_w, tile_h = width * scale, height * scale
    font = ImageFont.load_default()
    chars_per_line = max(8, tile_w // 6)
    text_h = 11 * label_lines if labels else 0
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * (tile_w + 4) + 4, rows * (tile_h + text_h + 4) + 4), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        x, y = 4 + (i % columns) * (tile_w + 4), 4 + (i // columns) * (tile_h + text_h + 4)
        tile = Image.fromarray(np.asarray(image, np.uint8)).resize((tile_w, tile_h), Image.NEAREST)
        grid.paste(tile, (x, y))
        if i < len(labels):
            lines = textwrap.wrap(labels[i], chars_per_line)[:label_lines]
            for j, line in enumerate(lines):
                draw.text((x, y + tile_h + 1 + 11 * j), line, fill="black", font=font)
    return grid


def picture(images: Sequence[np.ndarray], labels: Sequence[str] = (), *, columns: int) -> np.ndarray:
    """`uint8 [H, W, 3]`: a grid of `images` with their labels, for TensorBoard."""
    return np.asarray(image_grid(images, labels, columns=columns, scale=tile_scale(images[0].shape[0]), label_lines=4))


def save_grid(path: str | pathlib.Path, images: Sequence[np.ndarray], labels: Sequence[str] = (), **kwargs) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, labels, **kwargs).save(path)
    return path
