"""TFDS builder for the shapes data set, written and read as array_record without TensorFlow.

Images are `uint8` tensors with zlib encoding (`tfds.features.Image` would need TensorFlow
to encode). Examples keep their generation order (`disable_shuffling`), so example `i` of a
split is `shapes.make_example(seed, split, i)`, and derived data sets (recaptions) can be
checked example by example.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from dalle_jax.data import shapes


# tfds warns "Using custom data configuration" on every load of a builder whose config is
# built at run time, which is how every shapes config is made: drop that one message.
logging.getLogger("absl").addFilter(lambda record: "Using custom data configuration" not in record.getMessage())


class ShapesConfig(tfds.core.BuilderConfig):
    """What to render: image side, split sizes, seed and the object-count distribution."""

    def __init__(self, *, image_size: int = 64, num_train: int = 20_000, num_validation: int = 1_000,
                 num_test_compositional: int = 1_000, seed: int = 0,
                 num_objects_probs: Sequence[float] = (0.4, 0.4, 0.2)):
        probs = tuple(float(p) for p in num_objects_probs)
        if len(probs) != shapes.MAX_OBJECTS or abs(sum(probs) - 1.0) > 1e-6 or min(probs) < 0:
            raise ValueError(f"num_objects_probs must be {shapes.MAX_OBJECTS} probabilities summing to 1, got {probs}")
        if image_size < 24:
            raise ValueError(f"image_size must be at least 24 pixels, got {image_size}")
        name = (f"{image_size}px_seed{seed}_{num_train}-{num_validation}-{num_test_compositional}"
                f"_p{'-'.join(f'{p:g}' for p in probs)}")
        super().__init__(name=name, description=f"{image_size}x{image_size} shapes, seed {seed}")
        self.image_size = image_size
        self.split_sizes = {"train": num_train, "validation": num_validation,
                            "test_compositional": num_test_compositional}
        self.seed = seed
        self.num_objects_probs = probs


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes with descriptive and alt-text captions and exact ground truth."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [ShapesConfig()]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        n = shapes.MAX_OBJECTS
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "index": tfds.features.Scalar(np.int64),
                "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                "caption": tfds.features.Text(),
                "alt_text": tfds.features.Text(),
                "prompt": tfds.features.Text(),
                "num_objects": tfds.features.Scalar(np.int32),
                "colours": tfds.features.Tensor(shape=(n,), dtype=np.int32),
                "shapes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
                "sizes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
                "centres": tfds.features.Tensor(shape=(n, 2), dtype=np.float32),
                "relation": tfds.features.Scalar(np.int32),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: every example is rendered
        return {split: self._generate_examples(split, count)
                for split, count in self.builder_config.split_sizes.items() if count > 0}

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            yield index, shapes.make_example(config.seed, split, index, config.image_size, config.num_objects_probs)


def shapes_builder(data_dir: str | pathlib.Path, **config_kwargs) -> Shapes:
    """The builder for a `ShapesConfig(**config_kwargs)` under `data_dir` (not yet prepared)."""
    config = ShapesConfig(**config_kwargs)
    if any(config.name == known.name for known in Shapes.BUILDER_CONFIGS):
        config = config.name  # tfds refuses a custom config named like a built-in one
    return Shapes(config=config, data_dir=str(data_dir), file_format="array_record")


def load_shapes(data_dir: str | pathlib.Path, **config_kwargs) -> dict[str, tfds.data_sources.ArrayRecordDataSource]:
    """Random-access sources for every split, rendering and writing them on first use."""
    builder = shapes_builder(data_dir, **config_kwargs)
    builder.download_and_prepare()
    return {split: builder.as_data_source(split) for split in builder.info.splits}
