"""Pictures read back from a run's TensorBoard event files, with TensorBoard's own reader."""

import io
import pathlib

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator


def read_pictures(run_dir: pathlib.Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """`{tag: [(step, uint8 [H, W, 3]), ...]}` of every image summary under `run_dir/tensorboard`."""
    events = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"),
                                                size_guidance={event_accumulator.IMAGES: 0})
    events.Reload()
    return {tag: [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
                  for e in events.Images(tag)]
            for tag in events.Tags()["images"]}


def tile(picture: np.ndarray, index: int, *, columns: int, size: int, label_lines: int = 4) -> np.ndarray:
    """Tile `index` of a `viz.picture` grid of `size`-pixel tiles (without its label)."""
    text_h = 11 * label_lines
    x, y = 4 + (index % columns) * (size + 4), 4 + (index // columns) * (size + text_h + 4)
    return picture[y: y + size, x: x + size]
