"""Building data sets from a user's own files: every good image kept with its caption, every bad
one skipped and reported with its reason, stable splits, and nothing half-written."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dalle_jax.config import load_config
from dalle_jax.data import ingest, pipeline
from tests.conftest import REPO
from tests.data import own_data
from tests.data.test_images import reference_square


def data_config(tmp_path, source, **overrides):
    overrides = {"data.source": source, "data.name": "mine", "data.data_dir": str(tmp_path / "data"),
                 "data.build_workers": 0, **overrides}
    return load_config(str(REPO / "configs/own_data_dalle.py:tiny"), overrides).data


def stored_by_key(config) -> dict[str, dict]:
    return {e["key"]: e for source in pipeline.load_sources(config).values() for e in source}


def test_folder_keeps_every_good_image_with_its_caption_and_reports_every_bad_one(tmp_path):
    expected = own_data.write_folder(tmp_path / "photos")
    config = data_config(tmp_path, f"folder:{tmp_path / 'photos'}", **{"data.image_format": "png",
                                                                        "data.build_workers": 2})
    report = ingest.build(config)
    stored = stored_by_key(config)
    assert set(stored) == set(expected["good"])
    for key, (intended, tolerance, caption) in expected["good"].items():
        assert stored[key]["caption"] == caption
        assert stored[key]["image"].shape == (32, 32, 3) and stored[key]["image"].dtype == np.uint8
        error = np.abs(stored[key]["image"].astype(float) - reference_square(intended, 32)).mean()
        assert error <= tolerance, f"{key}: {error:.2f}"
    assert report["skipped"] == expected["bad"]
    assert report["examples"] == {split: len(pipeline.load_sources(config)[split]) for split in ingest.SPLITS}
    listed = {pathlib.Path(item["file"]).name for items in report["skipped_examples"].values() for item in items}
    assert set(own_data.bad_images()) <= listed and {"no_caption.png", "twin.png"} <= listed
    on_disk = json.loads((ingest.dataset_dir(config) / ingest.REPORT).read_text())
    assert on_disk["skipped"] == expected["bad"]
    for source in pipeline.load_sources(config).values():  # `index` is the position in the split
        assert [int(source[i]["index"]) for i in range(len(source))] == list(range(len(source)))


def test_jpeg_storage_is_within_its_stated_loss(tmp_path):
    own_data.write_folder(tmp_path / "photos")
    png = stored_by_key(data_config(tmp_path, f"folder:{tmp_path / 'photos'}", **{"data.image_format": "png"}))
    jpeg = stored_by_key(data_config(tmp_path, f"folder:{tmp_path / 'photos'}", **{"data.name": "mine_jpeg"}))
    assert set(png) == set(jpeg)
    errors = [np.abs(png[k]["image"].astype(float) - jpeg[k]["image"]).mean() for k in png]
    assert max(errors) < 3.0  # quality 95 without chroma subsampling: 0.3–2.2 on these 32-px images


def test_split_is_a_stable_function_of_the_key():
    keys = [f"image_{i:05d}" for i in range(4000)]
    splits = [ingest.split_of(k, 0.25) for k in keys]
    assert splits == [ingest.split_of(k, 0.25) for k in keys]
    assert abs(splits.count("validation") / len(keys) - 0.25) < 0.03
    assert all(ingest.split_of(k, 0.0) == "train" for k in keys[:100])


def test_rebuilding_gives_the_same_splits(tmp_path):
    own_data.write_folder(tmp_path / "photos")
    first = data_config(tmp_path, f"folder:{tmp_path / 'photos'}")
    second = data_config(tmp_path, f"folder:{tmp_path / 'photos'}", **{"data.data_dir": str(tmp_path / "again")})
    keys = lambda config: {split: [e["key"] for e in source] for split, source in pipeline.load_sources(config).items()}
    assert keys(first) == keys(second)
    assert all(keys(first).values())  # both splits hold examples


def _pairs(count, start=0):
    pictures = own_data.good_images()
    names = sorted(pictures)
    return [(f"{i:09d}", pictures[names[i % len(names)]][0], f"caption {i}") for i in range(start, start + count)]


def test_webdataset_shards_with_missing_captions_duplicates_and_a_broken_tail(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    first = _pairs(6)
    first[2] = (first[2][0], first[2][1], None)  # no KEY.txt
    own_data.write_webdataset(shards / "00000.tar", first)
    own_data.write_webdataset(shards / "00001.tar", _pairs(5, start=5))  # key 5 again: a duplicate
    own_data.write_webdataset(shards / "00002.tar", _pairs(4, start=20), cut_last=True)
    config = data_config(tmp_path, f"webdataset:{shards}/*.tar", **{"data.upscale_small": True})
    report = ingest.build(config)
    assert report["skipped"] == {"missing_caption": 1, "duplicate_key": 1, "unreadable_member": 1,
                                 "unreadable_file": 1}
    stored = stored_by_key(config)
    assert set(stored) == {f"{i:09d}" for i in [0, 1, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22]}
    assert stored["000000021"]["caption"] == "caption 21"
    assert "00002.tar" in report["skipped_examples"]["unreadable_file"][0]["file"]


def _parquet(path, table):
    pq.write_table(pa.table(table), path)


def test_parquet_in_img2dataset_and_hugging_face_layouts(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    pictures = [data for data, _, _ in own_data.good_images().values()]
    _parquet(rows / "a.parquet", {"key": ["k0", "k1", "k2"], "jpg": [pictures[0], None, pictures[1]],
                                  "txt": ["zero", "one", "two"], "url": ["u0", "u1", "u2"]})
    _parquet(rows / "b.parquet", {"image": [{"bytes": pictures[2], "path": "x.png"}, {"bytes": b"junk", "path": "y"}],
                                  "text": ["hf zero", "hf one"]})
    _parquet(rows / "c.parquet", {"jpg": [pictures[3]], "description": ["no caption column by any known name"]})
    config = data_config(tmp_path, f"parquet:{rows}/*.parquet", **{"data.upscale_small": True})
    report = ingest.build(config)
    assert report["skipped"] == {"empty_file": 1, "not_an_image": 1, "missing_column": 1}
    assert "description" in report["skipped_examples"]["missing_column"][0]["detail"]
    stored = stored_by_key(config)
    assert {k: e["caption"] for k, e in stored.items()} == {"k0": "zero", "k2": "two", "b:0": "hf zero"}


def test_parquet_column_names_can_be_set(tmp_path):
    pictures = [data for data, _, _ in own_data.good_images().values()]
    _parquet(tmp_path / "x.parquet", {"id": ["a", "b"], "pixels": pictures[:2], "alt": ["first", "second"]})
    config = data_config(tmp_path, f"parquet:{tmp_path}/x.parquet", **{
        "data.image_column": "pixels", "data.caption_column": "alt", "data.key_column": "id",
        "data.upscale_small": True})
    ingest.build(config)
    assert {k: e["caption"] for k, e in stored_by_key(config).items()} == {"a": "first", "b": "second"}


def test_no_usable_example_is_an_error_and_leaves_nothing(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    for name, (data, _) in own_data.bad_images().items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text("caption")
    config = data_config(tmp_path, f"folder:{root}")
    with pytest.raises(ingest.NoExamplesError, match="no usable example"):
        ingest.build(config)
    assert not ingest.dataset_dir(config).exists()


def test_a_data_set_built_with_other_settings_is_refused(tmp_path):
    own_data.write_folder(tmp_path / "photos")
    ingest.build(data_config(tmp_path, f"folder:{tmp_path / 'photos'}"))
    with pytest.raises(ValueError, match="image_size: built 32, config 64"):
        ingest.build(data_config(tmp_path, f"folder:{tmp_path / 'photos'}", **{"data.image_size": 64}))


KILLED_BUILD = """
import sys, time
from dalle_jax.config import load_config
from dalle_jax.data import ingest

prepare = ingest.Prepare.__call__
def slow(self, record):
    print("prepared", flush=True)
    time.sleep(0.3)
    return prepare(self, record)
ingest.Prepare.__call__ = slow
config = load_config("configs/own_data_dalle.py:tiny", {"data.source": sys.argv[1], "data.name": "mine",
                     "data.data_dir": sys.argv[2], "data.build_workers": 0})
ingest.build(config.data)
"""


def test_a_killed_build_leaves_nothing_under_the_final_name_and_reruns_cleanly(tmp_path):
    expected = own_data.write_folder(tmp_path / "photos")
    source, data_dir = f"folder:{tmp_path / 'photos'}", tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, source, str(data_dir)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    prepared = 0
    while prepared < 5:  # some examples in: kill -9 in the middle of the train split
        line = process.stdout.readline()
        assert line, "the build ended before it was killed"
        prepared += line.startswith("prepared")
    process.send_signal(signal.SIGKILL)
    process.wait()
    config = data_config(tmp_path, source)
    final = ingest.dataset_dir(config)
    assert not final.exists() or not any(final.iterdir())
    report = ingest.build(config)
    assert report["skipped"] == expected["bad"]
    assert sum(report["examples"].values()) == len(expected["good"])
    assert not list(final.parent.glob("incomplete*"))


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight():
    consumed = []

    def items():
        for i in range(40):
            consumed.append(i)
            yield i

    for position, (item, result) in enumerate(ingest.ordered_map(abs, (-i for i in items()), workers=2, window=4)):
        assert item == -position and result == position
        assert len(consumed) - position <= 4 + 1


def test_a_webdataset_source_streams_through_grain_workers(tmp_path):
    """The stored JPEGs are decoded in the input pipeline: with 2 grain worker processes the
    batches are the ones read in this process."""
    from dalle_jax.tasks.image_tokenizer import ImageTokenizerTask
    from dalle_jax.train import partitioning

    own_data.write_webdataset(tmp_path / "00000.tar", _pairs(24))
    config = load_config(str(REPO / "configs/own_data_dalle.py:tiny"), {
        "data.source": f"webdataset:{tmp_path}/*.tar", "data.data_dir": str(tmp_path / "data"),
        "data.build_workers": 0, "data.upscale_small": True, "train.progress_bar": False})
    train = pipeline.load_sources(config.data)["train"]
    task = ImageTokenizerTask.from_config(config)
    sharding = partitioning.batch_sharding(partitioning.make_mesh(config.mesh))
    batches = [pipeline.ShardedBatches(train, task.preprocess, global_batch_size=4, sharding=sharding, seed=0,
                                       worker_count=workers) for workers in (0, 2)]
    for _ in range(3):
        in_process, from_workers = (np.asarray(next(b)["image"]) for b in batches)
        assert in_process.shape == (4, 32, 32, 3) and in_process.dtype == np.uint8
        np.testing.assert_array_equal(in_process, from_workers)


def test_a_data_set_of_your_own_is_recaptioned_with_its_stored_images_unchanged(tmp_path):
    from dalle_jax.data import recaption

    own_data.write_folder(tmp_path / "photos")
    config = data_config(tmp_path, f"folder:{tmp_path / 'photos'}")
    sources = pipeline.load_sources(config)
    recaption.write_captions(lambda images, chunk: [f"synthetic {chunk}:{i}" for i in range(len(images))], sources,
                             tmp_path / "captions", chunk_size=4)
    written = recaption.build_recaptioned(tmp_path / "recaptioned", "mine",
                                          pipeline.load_sources(config, decode_images=False), tmp_path / "captions", 4)
    for split, source in sources.items():
        copy = pipeline.TextDecoded(written[split])
        assert len(copy) == len(source)
        for i in (0, len(source) - 1):
            np.testing.assert_array_equal(copy[i]["image"], source[i]["image"])  # the same JPEG bytes
            assert copy[i]["caption"] == source[i]["caption"] and copy[i]["key"] == source[i]["key"]
            assert copy[i][recaption.CAPTION_FEATURE] == f"synthetic {i // 4}:{i % 4}"


@pytest.mark.parametrize("mapping", ["jsonl", "csv"])
def test_a_mapping_file_captions_a_folder(tmp_path, mapping):
    root = tmp_path / "photos"
    (root / "trips").mkdir(parents=True)
    pictures = sorted(own_data.good_images().items())[:3]
    names = ["trips/a.png", "b.jpg", "c.webp"]
    for name, (_, (data, _, _)) in zip(names, pictures):
        (root / name).write_bytes(data)
    captions = {"trips/a.png": "first, with a comma", "b.jpg": "second \"quoted\""}  # c.webp has no row
    if mapping == "jsonl":
        lines = [json.dumps({"file": f, "caption": c}) for f, c in captions.items()] + ["{not json"]
        (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    else:
        import csv

        with open(root / "captions.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "caption"])
            writer.writerows(captions.items())
    config = data_config(tmp_path, f"folder:{root}", **{"data.upscale_small": True, "data.validation_fraction": 0.0})
    report = ingest.build(config)
    assert {e["key"]: e["caption"] for e in pipeline.load_sources(config)["train"]} == {
        "trips/a": "first, with a comma", "b": 'second "quoted"'}
    expected = {"missing_caption": 1} | ({"unreadable_file": 1} if mapping == "jsonl" else {})
    assert report["skipped"] == expected
