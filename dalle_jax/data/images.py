"""Turning any image file a user brings into the square RGB image a data set stores.

Everything here is a pure function of bytes (no files, no config), so the data-set build can
run it in worker processes. A file that cannot be used raises `Rejected` with a reason from
`REASONS`, which the build counts and lists in its report.
"""

from __future__ import annotations

import io
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps

# Why an example was left out of a data set, as `build_report.json` counts them.
REASONS = {
    "empty_file": "the image file has zero bytes (or the row's image is null)",
    "not_an_image": "no image format recognised in the file's bytes",
    "corrupt_image": "the image's header was read but its pixels could not be decoded (truncated or damaged)",
    "too_many_pixels": "more pixels than data.max_pixels (a decompression bomb, or a huge scan)",
    "too_small": "the shorter side is under half of data.image_size (set data.upscale_small=True to keep it)",
    "missing_caption": "no caption for the image (.txt, mapping file row or caption column)",
    "empty_caption": "the caption is empty or only whitespace",
    "caption_not_utf8": "the caption's bytes are not UTF-8",
    "duplicate_key": "an earlier example has the same key; the first one is kept",
    "unreadable_member": "a tar member could not be read",
    "unreadable_file": "a tar shard, parquet file or mapping file could not be read (the rest of it is lost)",
    "missing_column": "a parquet file has no image or caption column (see data.image_column, data.caption_column)",
}
FORMATS = ("jpeg", "png")


class Rejected(ValueError):
    """An example the build leaves out: `reason` is a key of `REASONS`, `detail` says more."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # rebuilt from (reason, detail) when it crosses a process boundary
        return Rejected, (self.reason, self.detail)


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """The first frame of an encoded image of any format Pillow reads, fully decoded.

    Raises `Rejected` for empty, unrecognised, truncated or corrupt data, and for images of
    more than `max_pixels` pixels (checked from the header, before any pixel is decoded).
    """
    if not data:
        raise Rejected("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise Rejected("too_many_pixels", f"{image.width}×{image.height} > {max_pixels:,}")
            image.seek(0)  # animations: the first frame
            image.load()
    except Image.DecompressionBombError as error:  # beyond Pillow's own hard limit
        raise Rejected("too_many_pixels", str(error)) from None
    except Image.UnidentifiedImageError:
        raise Rejected("not_an_image", f"{len(data)} bytes starting {data[:8]!r}") from None
    except Rejected:
        raise
    except Exception as error:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, ...
        raise Rejected("corrupt_image", f"{type(error).__name__}: {error}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """An `RGB` image of any mode: EXIF orientation applied, transparency composited on white,
    16- and 32-bit integer greyscale scaled to 8 bits, palette, CMYK, greyscale and bilevel converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # Pillow's convert would clip, not scale
        pixels = np.asarray(image).astype(np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.round(pixels * 255.0 / peak), 0, 255).astype(np.uint8))
    if image.mode == "P" or image.mode.endswith("A") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def resize_and_crop(image: Image.Image, size: int, *, upscale_small: bool = False) -> Image.Image:
    """The shorter side resized to `size` (Lanczos, antialiased when shrinking), then the centre
    `size × size` crop. Images whose shorter side is under `size / 2` raise `Rejected("too_small")`
    unless `upscale_small`."""
    shorter = min(image.size)
    if 2 * shorter < size and not upscale_small:
        raise Rejected("too_small", f"{image.width}×{image.height} for {size}×{size}")
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def encode(image: Image.Image, image_format: str, quality: int = 95) -> bytes:
    """`image` as PNG or JPEG bytes (JPEG at `quality`, without chroma subsampling)."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    elif image_format == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        raise ValueError(f"image format must be one of {FORMATS}, got {image_format!r}")
    return buffer.getvalue()


def square_rgb(data: bytes, size: int, *, max_pixels: int, upscale_small: bool = False) -> Image.Image:
    """The `size × size` RGB image that `data` (any image file) becomes; raises `Rejected`."""
    image = open_image(data, max_pixels=max_pixels)
    try:
        image = to_rgb(image)
    except Exception as error:  # a damaged EXIF block, an exotic mode
        detail = f"cannot convert {image.mode} to RGB: {type(error).__name__}: {error}"
        raise Rejected("corrupt_image", detail) from None
    return resize_and_crop(image, size, upscale_small=upscale_small)


def read_input_image(path: str | pathlib.Path, size: int, *, max_pixels: int) -> np.ndarray:
    """`uint8 [size, size, 3]`: an image file a user hands a model (`--image`, an upload), as
    `build-data` would store it, small images upscaled. Raises `Rejected`, or `OSError` if the
    file cannot be read."""
    data = pathlib.Path(path).read_bytes()
    return np.asarray(square_rgb(data, size, max_pixels=max_pixels, upscale_small=True), np.uint8)


def prepare_image(data: bytes, size: int, *, max_pixels: int, upscale_small: bool = False,
                  image_format: str = "jpeg", quality: int = 95) -> bytes:
    """Encoded bytes of `square_rgb(data, ...)`, as a data set stores them."""
    return encode(square_rgb(data, size, max_pixels=max_pixels, upscale_small=upscale_small), image_format, quality)


def decode_caption(data: bytes | str | None) -> str:
    """A caption from a `.txt` file's bytes (UTF-8, an optional BOM) or a string, stripped.
    Raises `Rejected` when it is missing, empty or not UTF-8."""
    if data is None:
        raise Rejected("missing_caption")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise Rejected("caption_not_utf8", str(error)) from None
    caption = " ".join(str(data).split())
    if not caption:
        raise Rejected("empty_caption")
    return caption
