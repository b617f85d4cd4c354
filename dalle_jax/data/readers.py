"""Reading a user's image–caption pairs as a stream of `Record`s, from three kinds of source.

- `folder:DIR`: image files anywhere under DIR (`IMAGE_SUFFIXES`), each captioned by the
  `.txt` file of the same stem beside it, or by one mapping file at DIR's top,
  `captions.jsonl` (`{"file": "relative/path.jpg", "caption": "..."}` per line) or
  `captions.csv` (columns `file` and `caption`).
- `webdataset:GLOB`: tar shards as img2dataset writes them (`KEY.jpg|png|webp|...`, `KEY.txt`,
  optional `KEY.json`), read with the standard `tarfile` module, one member at a time.
- `parquet:GLOB`: rows with the image's bytes and its caption, read with pyarrow in batches:
  img2dataset's parquet output (`jpg`, `txt`, `key`) and Hugging Face data sets exported to
  parquet (`image` as `{"bytes", "path"}`, `text` or `caption`); the column names can be set.

Nothing is decoded here, and nothing is held beyond one tar sample or one parquet batch: the
build (`ingest.py`) decodes in worker processes. A problem found while reading (an unreadable
shard or member, a missing column) comes out as a `Record` with its `problem` set.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
import pathlib
import tarfile
from typing import Iterator

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
KINDS = ("folder", "webdataset", "parquet")
MAPPING_FILES = ("captions.jsonl", "captions.csv")
IMAGE_COLUMNS = ("jpg", "png", "webp", "image", "img")
CAPTION_COLUMNS = ("txt", "caption", "text")


@dataclasses.dataclass
class Record:
    """One example as read: `key` identifies it (it decides the split and finds duplicates),
    `origin` is what a report names (a file, `shard.tar:member`, `file.parquet:row N`)."""

    key: str | None
    origin: str
    image: bytes | None = None
    caption: bytes | str | None = None
    problem: str | None = None  # a `images.REASONS` key when the record is already known to be bad
    detail: str = ""


def parse_source(spec: str) -> tuple[str, str]:
    """`"KIND:PATH"` to `(kind, path)`, with a clear error for anything else."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS or not path:
        raise ValueError(f"data.source must read KIND:PATH with KIND one of {', '.join(KINDS)} "
                         f"(e.g. folder:photos, webdataset:'shards/*.tar', parquet:'rows/*.parquet'); got {spec!r}")
    return kind, os.path.expanduser(path)


def read_records(spec: str, *, image_column: str = "", caption_column: str = "", key_column: str = "",
                 ) -> Iterator[Record]:
    """Every record of a `KIND:PATH` source, in a fixed order (sorted files, then file order)."""
    kind, path = parse_source(spec)
    if kind == "folder":
        return read_folder(path)
    if kind == "webdataset":
        return read_webdataset(path)
    return read_parquet(path, image_column=image_column, caption_column=caption_column, key_column=key_column)


def _matching_files(pattern: str, what: str) -> list[str]:
    files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        raise FileNotFoundError(f"no {what} matches {pattern!r}")
    return files


# -- folder ------------------------------------------------------------------------------


def read_folder(directory: str | pathlib.Path) -> Iterator[Record]:
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"folder source {root} is not a directory")
    mapping, mapping_problems = _mapping(root)
    yield from mapping_problems
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = pathlib.Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(root).as_posix()
            record = Record(key=relative.rsplit(".", 1)[0], origin=str(path))
            try:
                record.image = path.read_bytes()
            except OSError as error:
                record.problem, record.detail = "unreadable_file", str(error)
            if mapping is not None:
                record.caption = mapping.get(relative)
            else:
                caption_file = path.with_suffix(".txt")
                record.caption = caption_file.read_bytes() if caption_file.is_file() else None
            yield record


def _mapping(root: pathlib.Path) -> tuple[dict[str, str] | None, list[Record]]:
    """The captions of `captions.jsonl` or `captions.csv` by relative path, or None if neither
    exists; rows that cannot be read come back as problem records."""
    jsonl, csv_file = root / MAPPING_FILES[0], root / MAPPING_FILES[1]
    if jsonl.is_file():
        mapping, problems = {}, []
        with open(jsonl, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    mapping[str(row["file"])] = row.get("caption")
                except (ValueError, KeyError, TypeError) as error:
                    problems.append(Record(None, f"{jsonl}:{number}", problem="unreadable_file",
                                           detail=f"not a JSON object with 'file' and 'caption': {error}"))
        return mapping, problems
    if csv_file.is_file():
        try:
            with open(csv_file, newline="", encoding="utf-8-sig") as rows:
                reader = csv.DictReader(rows)
                if not {"file", "caption"} <= set(reader.fieldnames or ()):
                    raise ValueError(f"needs the columns 'file' and 'caption', has {reader.fieldnames}")
                return {row["file"]: row["caption"] for row in reader}, []
        except (OSError, ValueError, csv.Error) as error:
            raise ValueError(f"cannot read the caption mapping {csv_file}: {error}") from None
    return None, []


# -- webdataset --------------------------------------------------------------------------


def _sample_key(member_name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the file name."""
    directory, _, name = member_name.rpartition("/")
    stem, _, suffix = name.partition(".")
    return (f"{directory}/{stem}" if directory else stem), suffix.lower()


def read_webdataset(pattern: str) -> Iterator[Record]:
    for shard in _matching_files(pattern, "tar shard"):
        yield from _read_shard(shard)


def _read_shard(shard: str) -> Iterator[Record]:
    """The samples of one tar, grouping consecutive members with one key (as webdataset does)."""
    current: dict | None = None
    try:
        with tarfile.open(shard, "r|*") as tar:  # a stream: one member at a time
            for member in tar:
                if not member.isfile():
                    continue
                key, suffix = _sample_key(member.name)
                if current is None or current["key"] != key:
                    if current is not None:
                        yield _sample_record(shard, current)
                    current = {"key": key, "files": {}, "problems": []}
                try:
                    current["files"][suffix] = tar.extractfile(member).read()
                except (tarfile.TarError, OSError, EOFError) as error:
                    current["problems"].append(f"{member.name}: {error}")
    except (tarfile.TarError, OSError, EOFError) as error:
        detail = f"{type(error).__name__}: {error}"
        if current is not None:  # the damage may have cut this sample short
            current["problems"].append(f"the shard breaks off here ({detail})")
            yield _sample_record(shard, current)
        yield Record(None, shard, problem="unreadable_file", detail=detail)
        return
    if current is not None:
        yield _sample_record(shard, current)


def _sample_record(shard: str, sample: dict) -> Record:
    record = Record(key=sample["key"], origin=f"{shard}:{sample['key']}")
    if sample["problems"]:
        record.problem, record.detail = "unreadable_member", "; ".join(sample["problems"])
        return record
    files = sample["files"]
    image_suffix = next((s for s in files if "." + s in IMAGE_SUFFIXES), None)
    if image_suffix is None:
        record.problem, record.detail = "empty_file", f"no image member among {sorted(files)}"
        return record
    record.image, record.caption = files[image_suffix], files.get("txt")
    return record


# -- parquet -----------------------------------------------------------------------------


def _pick(column: str, candidates: tuple[str, ...], names: list[str]) -> str | None:
    if column:
        return column if column in names else None
    return next((name for name in candidates if name in names), None)


def read_parquet(pattern: str, *, image_column: str = "", caption_column: str = "", key_column: str = "",
                 batch_size: int = 64) -> Iterator[Record]:
    """Rows in batches, one row group at a time: memory follows the largest row group, not the file
    (pyarrow's `iter_batches` reads ahead across row groups and grows with the file)."""
    import pyarrow.parquet as pq

    for path in _matching_files(pattern, "parquet file"):
        try:
            parquet = pq.ParquetFile(path, buffer_size=1 << 20)
            names = parquet.schema_arrow.names
        except Exception as error:  # pyarrow raises its own hierarchy (ArrowInvalid, OSError, ...)
            yield Record(None, path, problem="unreadable_file", detail=f"{type(error).__name__}: {error}")
            continue
        image, caption = _pick(image_column, IMAGE_COLUMNS, names), _pick(caption_column, CAPTION_COLUMNS, names)
        if image is None or caption is None:
            missing = [f"{what} column {wanted or ' / '.join(options)!r}"
                       for what, wanted, options, found in (("image", image_column, IMAGE_COLUMNS, image),
                                                            ("caption", caption_column, CAPTION_COLUMNS, caption))
                       if found is None]
            yield Record(None, path, problem="missing_column",
                         detail=f"no {' and no '.join(missing)}; the file has {names}")
            continue
        key = _pick(key_column, ("key",), names)
        columns = [image, caption] + ([key] if key else [])
        row = 0
        try:
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=columns, use_threads=False)
                for batch in table.to_batches(batch_size):
                    for values in batch.to_pylist():
                        yield _row_record(path, row, values[image], values[caption], values[key] if key else None)
                        row += 1
        except Exception as error:
            yield Record(None, f"{path}:row {row}", problem="unreadable_file",
                         detail=f"{type(error).__name__}: {error}")


def _row_record(path: str, row: int, image, caption, key) -> Record:
    if isinstance(image, dict):  # Hugging Face's Image feature: {"bytes", "path"}
        image = image.get("bytes")
    key = str(key) if key is not None else f"{pathlib.Path(path).stem}:{row}"
    return Record(key, f"{path}:row {row}", image=image, caption=caption)
