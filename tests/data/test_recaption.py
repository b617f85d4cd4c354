import numpy as np
import pytest
import tensorflow_datasets as tfds

from dalle_jax.data import recaption


def _caption_of(image: np.ndarray) -> str:
    return f"image {int(image.astype(np.int64).sum())}"


def _caption_fn(images, chunk_index):
    del chunk_index
    return [_caption_of(image) for image in images]


def _recording(calls, fail_at=None):
    def caption_fn(images, chunk_index):
        calls.append(chunk_index)
        if chunk_index == fail_at:
            raise KeyboardInterrupt  # stopped while captioning this chunk
        return _caption_fn(images, chunk_index)

    return caption_fn


def test_resumes_at_the_first_missing_chunk(tiny_sources, tmp_path):
    sources = {"validation": tiny_sources["validation"]}  # 32 examples: chunks of 10, 10, 10, 2
    calls = []
    with pytest.raises(KeyboardInterrupt):
        recaption.write_captions(_recording(calls, fail_at=2), sources, tmp_path, chunk_size=10)
    assert calls == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validation_00000000.json", "validation_00000010.json"]
    calls.clear()
    stats = recaption.write_captions(_recording(calls), sources, tmp_path, chunk_size=10)
    assert calls == [2, 3] and stats["images"] == 12
    captions = recaption.read_captions(tmp_path, "validation", 32, chunk_size=10)
    assert captions == [_caption_of(sources["validation"][i]["image"]) for i in range(32)]


def test_missing_chunk_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="validation_00000000.json"):
        recaption.read_captions(tmp_path, "validation", 5, chunk_size=10)


def test_recaptioned_data_set_keeps_every_example_in_order(tiny_sources, tmp_path):
    sources = {split: tiny_sources[split] for split in ("train", "validation")}
    captions_dir = tmp_path / "captions"
    recaption.write_captions(_caption_fn, sources, captions_dir, chunk_size=100)
    out = recaption.build_recaptioned(tmp_path / "data", "tiny_descriptive", sources, captions_dir, chunk_size=100)
    assert {split: len(s) for split, s in out.items()} == {split: len(s) for split, s in sources.items()}
    for split, source in sources.items():
        for index in range(len(source)):
            original, new = source[index], out[split][index]
            assert set(new) == set(original) | {recaption.CAPTION_FEATURE}
            for key, value in original.items():
                stored = new[key].decode() if isinstance(new[key], bytes) else new[key]
                np.testing.assert_array_equal(stored, value, err_msg=f"{split}[{index}][{key}]")
            assert new[recaption.CAPTION_FEATURE].decode() == _caption_of(original["image"])
    by_name = tfds.data_source(f"{recaption.NAME}/tiny_descriptive", split="validation", data_dir=str(tmp_path / "data"))
    assert by_name[7][recaption.CAPTION_FEATURE].decode() == _caption_of(sources["validation"][7]["image"])
