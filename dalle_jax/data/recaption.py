"""Recaptioning a data set (DALL·E 3, section 2): every example keeps its own features and
gains a synthetic caption written by the captioner.

Captions are written in chunks of `chunk_size` examples (`CAPTIONS_DIR/SPLIT_BEGIN.json`),
each file written whole or not at all, so a stopped run resumes at the first missing chunk.
When every chunk is there, the `Recaptioned` tfds builder writes the new data set as
array_record: example `i` of each split is example `i` of the source plus `synthetic_caption`.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds
import tqdm

CAPTION_FEATURE = "synthetic_caption"
NAME = "recaptioned"

CaptionFn = Callable[[np.ndarray, int], list[str]]  # (uint8 images [n, H, W, 3], chunk index) -> captions


def _chunk_path(captions_dir: pathlib.Path, split: str, begin: int) -> pathlib.Path:
    return captions_dir / f"{split}_{begin:08d}.json"


def write_captions(caption_fn: CaptionFn, sources: Mapping[str, object], captions_dir: str | pathlib.Path, *,
                   chunk_size: int = 512) -> dict[str, float]:
    """Captions every example of every split into chunk files, skipping chunks already written.

    Returns `{"images": captioned now, "seconds": ..., "images_per_second": ...}`.
    """
    captions_dir = pathlib.Path(captions_dir)
    captions_dir.mkdir(parents=True, exist_ok=True)
    done, seconds = 0, 0.0
    for split, source in sources.items():
        begins = [b for b in range(0, len(source), chunk_size) if not _chunk_path(captions_dir, split, b).exists()]
        todo = sum(min(chunk_size, len(source) - b) for b in begins)
        with tqdm.tqdm(total=len(source), initial=len(source) - todo, desc=f"recaption {split}", unit="image") as bar:
            for begin in begins:
                end = min(begin + chunk_size, len(source))
                images = np.stack([source[i]["image"] for i in range(begin, end)])
                tick = time.perf_counter()
                captions = caption_fn(images, begin // chunk_size)
                seconds += time.perf_counter() - tick
                if len(captions) != end - begin:
                    raise ValueError(f"caption_fn returned {len(captions)} captions for {end - begin} images")
                path = _chunk_path(captions_dir, split, begin)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"begin": begin, "captions": captions}))
                tmp.rename(path)  # a chunk is there whole or not at all
                done += end - begin
                bar.update(end - begin)
    return {"images": done, "seconds": seconds, "images_per_second": done / seconds if seconds else 0.0}


def read_captions(captions_dir: str | pathlib.Path, split: str, count: int, chunk_size: int) -> list[str]:
    """The `count` captions of a split, in example order; names the first missing chunk."""
    captions = []
    for begin in range(0, count, chunk_size):
        path = _chunk_path(pathlib.Path(captions_dir), split, begin)
        if not path.exists():
            raise FileNotFoundError(f"missing recaption chunk {path}; run recaption again to finish it")
        captions += json.loads(path.read_text())["captions"]
    if len(captions) != count:
        raise ValueError(f"{captions_dir}: {len(captions)} captions for {count} examples of {split!r}")
    return captions


class RecaptionedConfig(tfds.core.BuilderConfig):
    """A source data set (features and random-access splits) and its captions' directory."""

    def __init__(self, *, name: str, features: tfds.features.FeaturesDict, sources: Mapping[str, object],
                 captions_dir: str | pathlib.Path, chunk_size: int):
        super().__init__(name=name, description=f"recaptioned with the captions in {captions_dir}")
        self.source_features = features
        self.sources = sources
        self.captions_dir = pathlib.Path(captions_dir)
        self.chunk_size = chunk_size


class Recaptioned(tfds.core.GeneratorBasedBuilder):
    """A data set's examples, unchanged and in order, with a synthetic caption beside each."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = dict(self.builder_config.source_features)
        features[CAPTION_FEATURE] = tfds.features.Text()
        return tfds.core.DatasetInfo(builder=self, description=__doc__, disable_shuffling=True,
                                     features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in self.builder_config.sources}

    def _generate_examples(self, split: str):
        config = self.builder_config
        source = config.sources[split]
        captions = read_captions(config.captions_dir, split, len(source), config.chunk_size)
        for index in range(len(source)):
            yield index, {**source[index], CAPTION_FEATURE: captions[index]}


def build_recaptioned(data_dir: str | pathlib.Path, name: str, sources: Mapping[str, object],
                      captions_dir: str | pathlib.Path, chunk_size: int) -> dict[str, object]:
    """Writes (once) and returns the recaptioned data set `recaptioned/NAME` under `data_dir`."""
    features = next(iter(sources.values())).features
    builder = Recaptioned(config=RecaptionedConfig(name=name, features=features, sources=sources,
                                                   captions_dir=captions_dir, chunk_size=chunk_size),
                          data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return {split: builder.as_data_source(split) for split in builder.info.splits}
