"""Grain input pipelines that yield global batches sharded over the mesh.

Each host reads its own block of each global batch of a deterministic shuffled stream
(rows `p * B / n` to `(p + 1) * B / n` on process `p` of `n`), preprocesses it with the task's
pure per-example function (its random draws keyed by the example's place in the stream), and
assembles the global batch with `jax.make_array_from_process_local_data`: the batches do not
depend on the number of processes. The stream is a function of the seed alone, and
its position is the iterator state that goes into checkpoints.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from jax.experimental import multihost_utils

from dalle_jax.data import ingest, tfds_shapes

Example = Mapping[str, Any]
Batch = dict[str, np.ndarray]


def source_name(data_config) -> str:
    """The tfds name (`name/config`) that `load_sources` reads for `config.data`."""
    if is_own_data(data_config):
        return f"{ingest.BUILDER}/{data_config.name}"
    if data_config.name != "shapes":
        return data_config.name
    return f"shapes/{tfds_shapes.ShapesConfig(**_shapes_kwargs(data_config)).name}"


def _shapes_kwargs(data_config) -> dict:
    return dict(image_size=data_config.image_size, num_train=data_config.num_train,
                num_validation=data_config.num_validation, num_test_compositional=data_config.num_test_compositional,
                seed=data_config.seed, num_objects_probs=tuple(data_config.num_objects_probs))


def is_own_data(data_config) -> bool:
    """Whether `config.data` is a user's images and captions (`ingest.py`): `data.source` set."""
    return bool(data_config.get("source"))


def load_sources(data_config, *, decode_images: bool = True) -> dict[str, Any]:
    """Random-access sources by split for `config.data`.

    With `data.source` set, the user's images and captions built by `ingest.build` as
    `image_text/NAME` (built on first use, on process 0); else `data.name == "shapes"` renders
    the procedural data set (once, on process 0); any other name is a tfds data set already
    prepared as array_record in `data_dir`. Images come back decoded (`uint8 [H, W, 3]`), or,
    with `decode_images=False`, as the stored bytes of a data set that stores them encoded.
    """
    if is_own_data(data_config):
        _prepared_by_process_0(lambda: ingest.build(data_config), "image_text data set built")
        sources = ingest.load(data_config, decode_images)
    elif data_config.name != "shapes":
        sources = tfds.data_source(data_config.name, data_dir=data_config.data_dir)
    else:
        kwargs = _shapes_kwargs(data_config)
        _prepared_by_process_0(lambda: tfds_shapes.load_shapes(data_config.data_dir, **kwargs),
                               "shapes data set prepared")
        sources = tfds_shapes.load_shapes(data_config.data_dir, **kwargs)
    return {split: TextDecoded(source) for split, source in sources.items()}


def first_examples(data_config, split: str, count: int = 8) -> list[dict]:
    """The first `count` examples of a split (fewer if it is smaller; the training split's if it
    is empty, as a data set of your own with `validation_fraction = 0` is): the fixed inputs of a
    task's pictures."""
    sources = load_sources(data_config)
    source = sources[split] if len(sources[split]) else sources["train"]
    return [source[i] for i in range(min(count, len(source)))]


def _prepared_by_process_0(prepare, what: str) -> None:
    """With several processes, process 0 writes the data set and the others wait, then read what
    it wrote; alone, the caller prepares it as it loads."""
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            prepare()
        multihost_utils.sync_global_devices(what)


class TextDecoded:
    """A random-access source whose tfds `Text` features come back as `str`."""

    def __init__(self, source):
        self._source = source
        self._text = {k for k, f in self.features.items() if isinstance(f, tfds.features.Text)}

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return {k: v.decode() if k in self._text and isinstance(v, bytes) else v
                for k, v in self._source[index].items()}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def features(self):
        """The source's tfds `FeaturesDict`."""
        return self._source.dataset_info.features

    def __repr__(self) -> str:
        return f"TextDecoded({self._source!r})"




class ShardedBatches:
    """An iterator of global batches on the mesh with a JSON-serialisable state.

    Args:
      source: a random-access source (`len`, `__getitem__`) of examples.
      preprocess: a pure function `(example, rng: np.random.Generator) -> dict of arrays`.
      global_batch_size: examples per step over all hosts.
      sharding: where the batch goes (`partitioning.batch_sharding(mesh)`).
      seed: fixes the shuffle order and the per-example generators.
      shuffle: reshuffle each epoch; else read in order.
      num_epochs: None repeats forever.
      worker_count: grain worker processes (0 reads in the main process).
    """

    def __init__(self, source, preprocess: Callable[[Example, np.random.Generator], Batch], *,
                 global_batch_size: int, sharding: jax.sharding.NamedSharding, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, worker_count: int = 0):
        num_hosts = jax.process_count()
        if global_batch_size % num_hosts:
            raise ValueError(f"global batch size {global_batch_size} is not divisible by {num_hosts} hosts")
        dataset = grain.MapDataset.source(source).seed(seed)
        if shuffle:
            dataset = dataset.shuffle()
        # Examples are drawn and preprocessed by their place in the one global stream, and process p
        # reads block p of each global batch: any number of processes sees the batches one does.
        # (`[::1]` changes nothing but the seed grain derives for `random_map` from its depth below
        # `.seed()`: it keeps the draws of the runs measured before, which sliced the stream there.)
        dataset = dataset.repeat(num_epochs)[::1].random_map(preprocess)
        dataset = dataset.batch(global_batch_size // num_hosts, drop_remainder=True)
        if num_epochs is not None:
            dataset = dataset[: len(dataset) // num_hosts * num_hosts]  # every process, the same number of steps
        dataset = dataset[jax.process_index()::num_hosts]
        iter_dataset = dataset.to_iter_dataset()
        if worker_count > 0:
            if not flags.FLAGS.is_parsed():  # grain's workers read absl flags: outside run.py, their defaults
                flags.FLAGS.mark_as_parsed()
            iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
        self._iterator = iter(iter_dataset)
        self._sharding = sharding

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        local = next(self._iterator)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._sharding, x), local)

    def get_state(self) -> dict:
        """The stream position, as plain JSON data (for `ocp.args.JsonSave`)."""
        state = self._iterator.get_state()
        return json.loads(state) if isinstance(state, (bytes, str)) else state

    def set_state(self, state: dict) -> None:
        self._iterator.set_state(state)
