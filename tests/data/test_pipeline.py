import chex
import jax
import numpy as np
import tensorflow_datasets as tfds

from dalle_jax.data import pipeline, shapes, tfds_shapes
from dalle_jax.tasks.toy import ToyTask
from dalle_jax.train import partitioning


def test_tfds_splits_hold_the_generated_examples_in_order(tiny_sources, tiny_config):
    assert {k: len(v) for k, v in tiny_sources.items()} == {"train": 256, "validation": 32, "test_compositional": 32}
    for split, source in tiny_sources.items():
        for index in (0, 5, len(source) - 1):
            expected = shapes.make_example(tiny_config.data.seed, split, index, image_size=32)
            stored = source[index]
            assert int(stored["index"]) == index
            np.testing.assert_array_equal(stored["image"], expected["image"])
            assert stored["caption"] == expected["caption"] and stored["alt_text"] == expected["alt_text"]
            np.testing.assert_array_equal(stored["colours"], expected["colours"])


def test_readable_by_name_through_tfds_data_source(tiny_sources, tiny_data_dir):
    config_name = tfds_shapes.ShapesConfig(image_size=32, num_train=256, num_validation=32,
                                           num_test_compositional=32).name
    source = tfds.data_source(f"shapes/{config_name}", split="validation", data_dir=str(tiny_data_dir))
    np.testing.assert_array_equal(source[3]["image"], tiny_sources["validation"][3]["image"])


def _batches(source, config, seed):
    task = ToyTask.from_config(config)
    mesh = partitioning.make_mesh(config.mesh)
    return pipeline.ShardedBatches(source, task.preprocess, global_batch_size=8,
                                   sharding=partitioning.batch_sharding(mesh), seed=seed)


def test_batches_shapes_dtypes_and_sharding(tiny_sources, tiny_config):
    batch = next(_batches(tiny_sources["train"], tiny_config, seed=0))
    chex.assert_shape(batch["image"], (8, 32, 32, 3))
    chex.assert_shape(batch["count"], (8,))
    chex.assert_shape(batch["colours"], (8, len(shapes.COLOUR_NAMES)))
    assert batch["image"].dtype == np.uint8 and batch["count"].dtype == np.int32
    assert isinstance(batch["image"], jax.Array)
    assert batch["image"].sharding.spec == jax.sharding.PartitionSpec(partitioning.BATCH_AXES)


def test_deterministic_for_a_seed_and_resumable(tiny_sources, tiny_config):
    source = tiny_sources["train"]
    first = [jax.device_get(b["image"]) for b, _ in zip(_batches(source, tiny_config, 1), range(6))]
    again = _batches(source, tiny_config, 1)
    for expected, _ in zip(first[:3], range(3)):
        np.testing.assert_array_equal(jax.device_get(next(again)["image"]), expected)
    state = again.get_state()
    resumed = _batches(source, tiny_config, 1)
    resumed.set_state(state)
    for expected in first[3:]:
        np.testing.assert_array_equal(jax.device_get(next(resumed)["image"]), expected)
    other = jax.device_get(next(_batches(source, tiny_config, 2))["image"])
    assert not np.array_equal(other, first[0])


def test_epochs_cover_every_example_once(tiny_sources, tiny_config):
    source = tiny_sources["validation"]  # 32 examples: 4 batches an epoch
    task = ToyTask.from_config(tiny_config)
    mesh = partitioning.make_mesh(tiny_config.mesh)
    batches = pipeline.ShardedBatches(source, lambda e, rng: {"index": np.asarray(e["index"])},
                                      global_batch_size=8, sharding=partitioning.batch_sharding(mesh), seed=0)
    del task
    epoch = np.concatenate([jax.device_get(next(batches)["index"]) for _ in range(4)])
    assert sorted(epoch.tolist()) == list(range(32))
    second = np.concatenate([jax.device_get(next(batches)["index"]) for _ in range(4)])
    assert sorted(second.tolist()) == list(range(32)) and not np.array_equal(epoch, second)


def test_the_default_config_is_the_builders_own(tmp_path):
    from dalle_jax.data import tfds_shapes

    builder = tfds_shapes.shapes_builder(tmp_path)  # tfds refuses a custom config named like a built-in one
    assert builder.builder_config.name == tfds_shapes.ShapesConfig().name
    other = tfds_shapes.shapes_builder(tmp_path, image_size=32)
    assert other.builder_config.image_size == 32
