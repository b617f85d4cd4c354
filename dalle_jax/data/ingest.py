"""Building a tfds data set (array_record) from a user's own images and captions.

`build(data_config)` reads `data.source` (`readers.py`), prepares every image once
(`images.prepare_image`: EXIF orientation, RGB, shorter side to `data.image_size`, centre
crop, encoded as `data.image_format`) in a pool of worker processes, and writes the tfds data
set `image_text/NAME` (NAME = `data.name`) under `data.data_dir` with the splits `train` and
`validation` and the features `index`, `key`, `image` and `caption`. Every other command
reads it like the shapes data set.

- The split of an example is a function of its key alone (`validation_fraction` of the hash
  space is validation), so a rebuild gives the same split.
- A bad example never stops the build: it is skipped, counted by reason and listed with its
  file in `build_report.json` beside the data. The build fails only when no example is left.
- tfds writes into a temporary directory and renames it when every split is written, so an
  interrupted build leaves nothing under the final name; the next run builds afresh.
- Memory does not grow with the number of images: records stream from the source and at
  most `window` of them are in flight in the pool (only the set of keys seen grows).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from dalle_jax.data import images, readers

BUILDER = "image_text"
SPLITS = ("train", "validation")
REPORT = "build_report.json"
# The settings that change what is stored: a data set built with others is not this config's.
STORED_SETTINGS = ("image_size", "validation_fraction", "upscale_small", "max_pixels", "image_format", "jpeg_quality")

log = logging.getLogger(__name__)

# tfds decodes images with Pillow when OpenCV is absent, and says so once per process.
logging.getLogger("absl").addFilter(lambda record: "OpenCV is not installed" not in record.getMessage())


class NoExamplesError(ValueError):
    """Every example of the source was skipped (the report says why)."""


def split_of(key: str, validation_fraction: float) -> str:
    """`validation` for a stable `validation_fraction` of keys (by SHA-256), else `train`."""
    position = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2 ** 64
    return "validation" if position < validation_fraction else "train"


def settings_of(data_config) -> dict[str, Any]:
    return {key: data_config[key] for key in STORED_SETTINGS}


@dataclasses.dataclass(frozen=True)
class Prepare:
    """The worker's job: one record's image and caption to the stored example's fields, or a
    `images.Rejected` (returned, not raised, so the pool carries it back like a result)."""

    image_size: int
    max_pixels: int
    upscale_small: bool
    image_format: str
    jpeg_quality: int

    def __call__(self, record: readers.Record) -> dict | images.Rejected:
        try:
            caption = images.decode_caption(record.caption)
            if not isinstance(record.image, (bytes, bytearray, memoryview)):
                if record.image is None:
                    raise images.Rejected("empty_file")
                raise images.Rejected("not_an_image", f"a {type(record.image).__name__}, not bytes")
            image = images.prepare_image(bytes(record.image), self.image_size, max_pixels=self.max_pixels,
                                         upscale_small=self.upscale_small, image_format=self.image_format,
                                         quality=self.jpeg_quality)
        except images.Rejected as rejected:
            return rejected
        return {"image": image, "caption": caption}

    @classmethod
    def from_settings(cls, settings: dict) -> "Prepare":
        return cls(**{field.name: settings[field.name] for field in dataclasses.fields(cls)})


def ordered_map(fn: Callable, items: Iterable, workers: int, window: int = 256) -> Iterator[tuple[Any, Any]]:
    """`(item, fn(item))` in the order of `items`, computed by `workers` processes (in this
    process if 0), with at most `window` items in flight: memory stays flat on any input."""
    if workers <= 0:
        yield from ((item, fn(item)) for item in items)
        return
    # "spawn": the parent may hold JAX's threads, which a fork would copy in an unknown state.
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = collections.deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= window:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()


class Report:
    """What a build kept and skipped, by split and reason (written as `build_report.json`)."""

    def __init__(self, source: str, settings: dict):
        self.source, self.settings = source, settings
        self.examples = {split: 0 for split in SPLITS}
        self.skipped: dict[str, list[dict]] = collections.defaultdict(list)
        self.seconds = 0.0

    def skip(self, reason: str, origin: str, detail: str = "") -> None:
        self.skipped[reason].append({"file": origin, "detail": detail})

    def to_json(self) -> dict:
        kept = sum(self.examples.values())
        return {"source": self.source, "settings": self.settings, "examples": dict(self.examples),
                "skipped_total": sum(len(v) for v in self.skipped.values()),
                "skipped": {reason: len(items) for reason, items in sorted(self.skipped.items())},
                "reasons": {reason: images.REASONS[reason] for reason in sorted(self.skipped)},
                "seconds": round(self.seconds, 2),
                "images_per_second": round(kept / self.seconds, 1) if self.seconds else 0,
                "skipped_examples": {reason: items for reason, items in sorted(self.skipped.items())}}



def summary(report: dict) -> str:
    """One line of a build report: examples kept by split, skipped by reason."""
    counts = ", ".join(f"{split} {n}" for split, n in report["examples"].items())
    skipped = ", ".join(f"{reason} {n}" for reason, n in report["skipped"].items())
    return f"kept {counts}; skipped {report['skipped_total']}" + (f" ({skipped})" if skipped else "")


class ImageTextConfig(tfds.core.BuilderConfig):
    """A data set of the user's: its name, where it is read from, and how images are stored."""

    def __init__(self, *, name: str, source: str, settings: dict, report: Report, workers: int,
                 reader_options: dict):
        super().__init__(name=name, description=f"images and captions from {source}")
        self.source, self.settings, self.report = source, settings, report
        self.workers, self.reader_options = workers, reader_options


class ImageText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A user's images (square, encoded) with their captions, in a stable order."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.settings
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "index": tfds.features.Scalar(np.int64),
                "key": tfds.features.Text(),
                "image": tfds.features.Image(shape=(s["image_size"], s["image_size"], 3),
                                             encoding_format=s["image_format"]),
                "caption": tfds.features.Text(),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the source is local
        with_validation = self.builder_config.settings["validation_fraction"] > 0
        return {split: self._generate_examples(split) for split in SPLITS if with_validation or split == "train"}

    def _generate_examples(self, split: str):
        config, report = self.builder_config, self.builder_config.report
        fraction = config.settings["validation_fraction"]
        seen: set[str] = set()

        def candidates():
            for record in readers.read_records(config.source, **config.reader_options):
                if record.key is None or split_of(record.key, fraction) != split:
                    if record.key is None and split == "train":  # a problem with no example: counted once
                        report.skip(record.problem, record.origin, record.detail)
                    continue
                if record.problem:
                    report.skip(record.problem, record.origin, record.detail)
                elif record.key in seen:
                    report.skip("duplicate_key", record.origin, f"key {record.key!r}")
                else:
                    seen.add(record.key)
                    yield record

        tick = time.perf_counter()
        prepare = Prepare.from_settings(config.settings)
        progress = tqdm.tqdm(desc=f"ingest {split}", unit="image", dynamic_ncols=True)
        for record, result in ordered_map(prepare, candidates(), config.workers):
            progress.update(1)
            if isinstance(result, images.Rejected):
                report.skip(result.reason, record.origin, result.detail)
                continue
            index = report.examples[split]
            report.examples[split] += 1
            yield index, {"index": index, "key": record.key, **result}
        progress.close()
        report.seconds += time.perf_counter() - tick


def dataset_dir(data_config) -> pathlib.Path:
    """Where `image_text/NAME/VERSION` of `config.data` lives (built or not)."""
    return pathlib.Path(data_config.data_dir) / BUILDER / data_config.name / str(ImageText.VERSION)


def read_report(data_config) -> dict | None:
    path = dataset_dir(data_config) / REPORT
    return json.loads(path.read_text()) if path.exists() else None


def check_built_with(data_config, report: dict) -> None:
    """Raises if the data set on disk was built with other storage settings than the config's."""
    wanted = settings_of(data_config)
    differ = {k: (report["settings"].get(k), v) for k, v in wanted.items() if report["settings"].get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: built {built!r}, config {want!r}" for k, (built, want) in differ.items())
        raise ValueError(f"the data set {dataset_dir(data_config)} was built with other settings ({listed}); "
                         f"choose another data.name, or delete that directory to rebuild it")
    if report["source"] != data_config.source:
        log.warning("%s was built from %s; the config names %s (reading what was built)",
                    dataset_dir(data_config), report["source"], data_config.source)


def build(data_config) -> dict:
    """Builds `image_text/NAME` from `data.source` unless it is built already; returns its report.

    `data.build_workers` processes (-1 every core, 0 this process alone) decode the images; they
    are spawned, so a script that calls this needs the usual `if __name__ == "__main__":` guard.
    The source is read once per split (tfds writes one split at a time); each image is decoded
    once, in its own split's pass.
    Raises `NoExamplesError` if no example is usable, `ValueError` for a data set on disk built
    with other settings.
    """
    existing = read_report(data_config)
    if existing is not None:
        check_built_with(data_config, existing)
        return existing
    if not data_config.source:
        raise ValueError(f"no data set {dataset_dir(data_config)}: set data.source=KIND:PATH to build it")
    readers.parse_source(data_config.source)  # a malformed source fails before anything is written
    if data_config.image_format not in images.FORMATS:
        raise ValueError(f"data.image_format must be one of {images.FORMATS}, got {data_config.image_format!r}")
    workers = data_config.build_workers if data_config.build_workers >= 0 else os.cpu_count() or 1
    report = Report(data_config.source, settings_of(data_config))
    config = ImageTextConfig(name=data_config.name, source=data_config.source, settings=report.settings, report=report,
                             workers=workers, reader_options={
                                 "image_column": data_config.image_column, "caption_column": data_config.caption_column,
                                 "key_column": data_config.key_column})
    builder = ImageText(config=config, data_dir=str(data_config.data_dir), file_format="array_record")
    final = pathlib.Path(builder.data_dir)
    if final.exists():  # written by tfds but no report: a build stopped between the two; start afresh
        shutil.rmtree(final)
    _remove_incomplete(final.parent)
    tfds.display_progress_bar(False)  # `ingest SPLIT` shows progress and rate instead
    try:
        builder.download_and_prepare()
    except AssertionError as error:  # tfds refuses to write a split with no example
        if "No examples were yielded" not in str(error):
            raise
        _remove_incomplete(final.parent)
        result = report.to_json()
        if not sum(report.examples.values()):
            raise NoExamplesError(f"no usable example in {data_config.source}: {summary(result)}; first problems: "
                                  f"{json.dumps(dict(list(result['skipped_examples'].items())[:3]))[:2000]}") from None
        empty = [split for split, n in report.examples.items() if not n]
        raise NoExamplesError(f"the {' and '.join(empty)} split got no example ({summary(result)}): use more images "
                              f"or another data.validation_fraction (now {data_config.validation_fraction})") from None
    finally:
        tfds.display_progress_bar(True)
    result = report.to_json()
    tmp = final / (REPORT + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    tmp.rename(final / REPORT)  # the report marks the data set complete
    return result


def _remove_incomplete(parent: pathlib.Path) -> None:
    """tfds leaves `incomplete.*` directories behind a build that was killed."""
    if parent.exists():
        for stale in parent.glob("incomplete*"):
            shutil.rmtree(stale, ignore_errors=True)


def load(data_config, decode_images: bool = True) -> dict[str, Any]:
    """Random-access sources by split of the built data set (building it first if needed);
    images decoded to `uint8 [H, W, 3]`, or their stored bytes if not `decode_images`."""
    build(data_config)
    builder = tfds.builder_from_directory(str(dataset_dir(data_config)))
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return {split: builder.as_data_source(split, decoders=decoders) for split in builder.info.splits}
