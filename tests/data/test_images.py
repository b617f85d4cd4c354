import io

import chex
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dalle_jax.data import images
from tests.data import own_data

LIMIT = 89_478_485


def reference_square(intended: np.ndarray, size: int) -> np.ndarray:
    """The definition, written out: the centre square of side min(height, width) (in source
    pixels, not rounded) resampled to `size × size` with Lanczos."""
    height, width = intended.shape[:2]
    side = min(height, width)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return np.asarray(Image.fromarray(intended).resize((size, size), Image.Resampling.LANCZOS, box=box))


@pytest.mark.parametrize("name", sorted(own_data.good_images()))
def test_every_mode_and_format_becomes_the_intended_rgb_square(name):
    data, intended, tolerance = own_data.good_images()[name]
    out = np.asarray(images.square_rgb(data, 32, max_pixels=LIMIT))
    chex.assert_shape(out, (32, 32, 3))
    assert out.dtype == np.uint8
    error = np.abs(out.astype(np.float64) - reference_square(intended, 32)).mean()
    assert error <= tolerance, f"{name}: mean absolute error {error:.2f} > {tolerance}"


@pytest.mark.parametrize("name", sorted(own_data.bad_images()))
def test_every_broken_file_is_rejected_with_its_reason(name):
    data, reason = own_data.bad_images()[name]
    with pytest.raises(images.Rejected) as rejected:
        images.square_rgb(data, 32, max_pixels=LIMIT)
    assert rejected.value.reason == reason


def test_pixel_limit_is_checked_before_decoding():
    data = own_data.png_header_only(300, 300)  # no pixel data at all: decoding would fail
    with pytest.raises(images.Rejected, match="too_many_pixels"):
        images.open_image(data, max_pixels=300 * 300 - 1)
    with pytest.raises(images.Rejected, match="corrupt_image"):
        images.open_image(data, max_pixels=300 * 300)


def test_small_images_are_upscaled_only_when_asked():
    data = own_data.bad_images()["tiny.png"][0]
    with pytest.raises(images.Rejected, match="too_small"):
        images.square_rgb(data, 32, max_pixels=LIMIT)
    chex.assert_shape(np.asarray(images.square_rgb(data, 32, max_pixels=LIMIT, upscale_small=True)), (32, 32, 3))


@pytest.mark.parametrize("image_format,tolerance", [("png", 0.0), ("jpeg", 2.0)])
def test_stored_encoding_round_trips(image_format, tolerance):
    square = Image.fromarray(own_data.gradient(32, 32, 3))
    decoded = np.asarray(Image.open(io.BytesIO(images.encode(square, image_format))))
    assert np.abs(decoded.astype(float) - np.asarray(square)).mean() <= tolerance


@pytest.mark.parametrize("raw,expected", [(b"\xef\xbb\xbf  a dog\n on grass \n", "a dog on grass"),
                                          ("déjà vu", "déjà vu"), ("emoji 🙂 ok", "emoji 🙂 ok")])
def test_captions_are_utf8_with_whitespace_collapsed(raw, expected):
    assert images.decode_caption(raw) == expected


@pytest.mark.parametrize("raw,reason", [(None, "missing_caption"), (b" \t\n", "empty_caption"),
                                        (b"caf\xe9", "caption_not_utf8")])
def test_bad_captions_are_rejected_with_their_reason(raw, reason):
    with pytest.raises(images.Rejected) as rejected:
        images.decode_caption(raw)
    assert rejected.value.reason == reason


def test_rejections_survive_pickling():  # they come back from the build's worker processes
    import pickle

    copy = pickle.loads(pickle.dumps(images.Rejected("too_small", "12×10")))
    assert (copy.reason, copy.detail) == ("too_small", "12×10")


_GOOD = [data for data, _, _ in own_data.good_images().values()]


@settings(max_examples=150, derandomize=True, deadline=None)
@given(data=st.one_of(
    st.binary(max_size=600),  # anything at all, text named .png included
    st.tuples(st.sampled_from(_GOOD), st.floats(0, 1)).map(lambda g: g[0][: int(len(g[0]) * g[1])]),  # truncated
    st.tuples(st.sampled_from(_GOOD), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)).map(
        lambda g: g[0][: g[1] % len(g[0])] + g[2] + g[0][g[1] % len(g[0]) + len(g[2]):])))  # bytes overwritten
def test_any_bytes_become_the_rgb_square_or_are_rejected_with_a_reason(data):
    """What `caption`, `variations`, `interpolate` and `text-diff` read through `square_rgb`: never
    another exception (run.py turns `Rejected` into a line naming the file)."""
    try:
        image = images.square_rgb(data, 24, max_pixels=10**6, upscale_small=True)
    except images.Rejected as rejected:
        assert rejected.reason in images.REASONS
    else:
        assert image.mode == "RGB" and image.size == (24, 24)
