"""Fixtures of a user's own data, written by the tests: good images in every mode and format a
user brings, broken files of every kind the build must skip, and the same pairs as an
img2dataset-style tar and a parquet file. Each good image comes with the RGB pixels it should
become (`intended`) before resizing."""

from __future__ import annotations

import io
import json
import pathlib
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image


def gradient(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth `uint8 [height, width, 3]` picture (resizing and JPEG change it little)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = np.random.default_rng(seed).random(3) * 6
    channels = [127.5 + 120 * np.sin(3 * x + 2 * y + p) for p in phase]
    return np.stack(channels, -1).round().astype(np.uint8)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def good_images() -> dict[str, tuple[bytes, np.ndarray, float]]:
    """`{file name: (bytes, intended RGB pixels, tolerance)}`: every mode and format. The
    tolerance is the mean absolute error allowed against the reference resize of `intended`
    (lossless sources 1.0, JPEG and its colour conversions more)."""
    files = {}
    rgb = gradient(48, 64, 0)
    files["rgb_png.png"] = (_save(Image.fromarray(rgb), "PNG"), rgb, 1.0)
    files["rgb_q95.jpg"] = (_save(Image.fromarray(rgb), "JPEG", quality=95), rgb, 3.0)
    files["photo.JPEG"] = (_save(Image.fromarray(rgb), "JPEG", quality=90), rgb, 3.0)  # suffix case
    files["rgb_webp.webp"] = (_save(Image.fromarray(rgb), "WEBP", lossless=True), rgb, 1.0)
    files["rgb_bmp.bmp"] = (_save(Image.fromarray(rgb), "BMP"), rgb, 1.0)
    # A file that claims one format and is another: read by its bytes, as browsers and Pillow do.
    files["png_named.jpg"] = (_save(Image.fromarray(rgb), "PNG"), rgb, 1.0)
    grey = gradient(40, 40, 1)[..., 0]
    files["grey.png"] = (_save(Image.fromarray(grey), "PNG"), np.repeat(grey[..., None], 3, -1), 1.0)
    deep = grey.astype(np.uint16) * 256 + 77  # 16 bits: scaled back to 8
    files["grey16.png"] = (_save(Image.fromarray(deep), "PNG"),
                           np.repeat(np.round(deep / 257.0).clip(0, 255).astype(np.uint8)[..., None], 3, -1), 1.0)
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    composite = (rgb * (alpha[..., None] / 255.0) + 255 * (1 - alpha[..., None] / 255.0)).round().astype(np.uint8)
    files["rgba.png"] = (_save(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), composite, 1.0)
    palette = Image.fromarray(rgb).quantize(16)
    files["palette.gif"] = (_save(palette, "GIF"), np.asarray(palette.convert("RGB")), 1.0)
    frames = [Image.fromarray(rgb).quantize(16), Image.fromarray(255 - rgb).quantize(16)]
    files["animated.gif"] = (_save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
                             np.asarray(frames[0].convert("RGB")), 1.0)  # the first frame
    cmyk = Image.fromarray(rgb).convert("CMYK")
    files["cmyk.jpg"] = (_save(cmyk, "JPEG", quality=95), rgb, 4.0)
    # EXIF orientation 6: the stored pixels are shown rotated 90° clockwise.
    stored = np.ascontiguousarray(np.rot90(rgb, 1))  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6
    files["rotated.jpg"] = (_save(Image.fromarray(stored), "JPEG", quality=95, exif=exif), rgb, 3.0)
    return files


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width × height` pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def bad_images() -> dict[str, tuple[bytes, str]]:
    """`{file name: (bytes, the reason the build must give)}`: each fails on its image."""
    jpeg = _save(Image.fromarray(gradient(48, 64, 5)), "JPEG", quality=95)
    png = _save(Image.fromarray(gradient(48, 64, 6)), "PNG")
    return {
        "empty.jpg": (b"", "empty_file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "corrupt_image"),
        "damaged.png": (png[:60] + bytes(200) + png[260:], "corrupt_image"),
        "text.png": (b"this is a caption, not a picture\n", "not_an_image"),
        "bomb.png": (png_header_only(20_000, 20_000), "too_many_pixels"),
        "tiny.png": (_save(Image.fromarray(gradient(10, 12, 7)), "PNG"), "too_small"),
    }


CAPTION_PROBLEMS = {  # caption bytes (None: no caption) -> the reason
    "no_caption": (None, "missing_caption"),
    "blank_caption": (b"  \n\t ", "empty_caption"),
    "latin1_caption": ("café au lait".encode("latin-1"), "caption_not_utf8"),
}


def caption_of(name: str) -> str:
    return f"a picture called {name.split('.')[0]}, with an accent: déjà vu"


def write_folder(root: pathlib.Path) -> dict:
    """A folder with every good image (captioned by a `.txt`), every bad one, every caption
    problem and one duplicate key. Returns what the build must find:
    `{"good": {key: (intended, tolerance, caption)}, "bad": {reason: count}}`."""
    root.mkdir(parents=True, exist_ok=True)
    good, bad = {}, {}
    for i, (name, (data, intended, tolerance)) in enumerate(sorted(good_images().items())):
        sub = root / ("nested/deeper" if i % 3 == 0 else "")  # images anywhere under the folder
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(data)
        (sub / name).with_suffix(".txt").write_text(caption_of(name) + "\n", encoding="utf-8")
        key = (sub / name).relative_to(root).as_posix().rsplit(".", 1)[0]
        good[key] = (intended, tolerance, caption_of(name))
    for name, (data, reason) in bad_images().items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text(caption_of(name))
        bad[reason] = bad.get(reason, 0) + 1
    image = _save(Image.fromarray(gradient(40, 40, 9)), "PNG")
    for stem, (caption, reason) in CAPTION_PROBLEMS.items():
        (root / f"{stem}.png").write_bytes(image)
        if caption is not None:
            (root / f"{stem}.txt").write_bytes(caption)
        bad[reason] = bad.get(reason, 0) + 1
    # Two files with one key (stem): the first in sorted order is kept, the other is a duplicate.
    (root / "twin.jpg").write_bytes(_save(Image.fromarray(gradient(40, 40, 10)), "JPEG", quality=95))
    (root / "twin.png").write_bytes(image)
    (root / "twin.txt").write_text("twins")
    good["twin"] = (gradient(40, 40, 10), 3.0, "twins")
    bad["duplicate_key"] = 1
    (root / "notes.md").write_text("not an image: ignored")
    return {"good": good, "bad": bad}


def write_webdataset(path: pathlib.Path, pairs: list[tuple[str, bytes, str | None]], *, cut_last: bool = False) -> None:
    """An img2dataset-style tar: `KEY.jpg|png`, `KEY.txt`, `KEY.json`; `cut_last` truncates the
    file in the middle of the last image (a shard whose download broke off)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, image, caption in pairs:
            suffix = "png" if image.startswith(b"\x89PNG") else "jpg"
            members = [(f"{key}.{suffix}", image), (f"{key}.json", json.dumps({"key": key}).encode())]
            if caption is not None:
                members.insert(1, (f"{key}.txt", caption.encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if cut_last:
        last_image = data.rfind(pairs[-1][1][:16])
        data = data[: last_image + len(pairs[-1][1]) // 2]
    path.write_bytes(data)
