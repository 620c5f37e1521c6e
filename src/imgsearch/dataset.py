"""The Parquet embeddings dataset: the hand-off between engines (which write it) and the store (which loads it).

One row per source file. A failed file has `error` set and no vector, so one write records both outcomes (the Spark
engine writes the same schema through Spark's committer). A dataset lives in a local folder or under a bucket prefix
(`Location`: pyarrow's file system for either). Local parts are written under a temporary name and renamed; a bucket
part is one PUT of the finished file, and an object appears only when its upload completes. Either way a reader never
sees half a file.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from imgsearch.buckets import (BucketConfig, filesystem, first_line, is_bucket_uri, normalize_bucket_uri,
                               split_bucket_uri)
from imgsearch.errors import DatasetError

SCHEMA_VERSION = "2"  # 2: tags, tag_scores (datasets of version 1 lack them and still load)

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # normalised source URI
        pa.field("vector", pa.list_(pa.float32())),  # L2-normalised embedding; null when error is set
        pa.field("model", pa.string(), nullable=False),
        pa.field("dim", pa.int32(), nullable=False),
        pa.field("width", pa.int32()),  # original size after EXIF orientation
        pa.field("height", pa.int32()),
        pa.field("bytes", pa.int64()),  # file size
        pa.field("mtime", pa.timestamp("us", tz="UTC")),  # file modification time
        pa.field("format", pa.string()),  # JPEG, PNG, ...
        pa.field("error", pa.string()),  # null = embedded; otherwise why the file was not
        # auto-tags from the model's classifier head, best first (null: the model has no head, or an older dataset)
        pa.field("tags", pa.list_(pa.string())),
        pa.field("tag_scores", pa.list_(pa.float32())),  # the tags' class probabilities
    ],
    metadata={"imgsearch.schema_version": SCHEMA_VERSION},
)


def empty_columns() -> dict[str, list]:
    return {name: [] for name in SCHEMA.names}


def to_table(columns: dict[str, list], vectors: list[np.ndarray | None]) -> pa.Table:
    """Build a table in SCHEMA from plain columns (all but `vector`; an empty column is all null) and one vector
    (or None) per row."""
    n = len(columns["id"])
    dim = next((len(v) for v in vectors if v is not None), 0)
    flat = np.concatenate([v for v in vectors if v is not None]).astype(np.float32) if dim else np.zeros(0, np.float32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    mask = np.zeros(n, dtype=bool)
    pos = 0
    for i, v in enumerate(vectors):
        if v is None:
            mask[i] = True
        else:
            pos += len(v)
        offsets[i + 1] = pos
    vec = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()), mask=pa.array(mask))
    arrays = []
    for field in SCHEMA:
        if field.name == "vector":
            arrays.append(vec)
        else:  # a column the caller left empty (e.g. tags of a model without a head) is all null
            values = columns.get(field.name) or [None] * n
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


@dataclass(frozen=True)
class Location:
    """Where a dataset lives: a folder of this machine or a prefix in a bucket, with the file system reaching it."""

    fs: pafs.FileSystem
    path: str  # in the file system's terms: an absolute local path, or bucket/prefix
    uri: str  # how people name it (messages)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.uri

    @property
    def report_name(self) -> "Path | str":
        """How run reports name it: a Path for a local folder, the URI for a bucket prefix."""
        return Path(self.path) if self.is_local else self.uri


def locate(where: "str | os.PathLike[str] | Location", buckets: BucketConfig | None = None) -> Location:
    """A dataset's Location from a folder, a file: URI or a bucket URI (s3://, gs://; reached with `buckets`)."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if is_bucket_uri(text):
        scheme, path = split_bucket_uri(text)
        return Location(filesystem(scheme, buckets or BucketConfig()), path, normalize_bucket_uri(text))
    from imgsearch.sources import local_path

    folder = os.path.abspath(local_path(text))
    return Location(pafs.LocalFileSystem(), folder, folder)


def part_name() -> str:
    """Names sort in commit order (a bucket's modification times have whole seconds only)."""
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:16]}.parquet"


def write_part(table: pa.Table, out_dir: "str | os.PathLike[str] | Location") -> str:
    """Write one part file atomically and return its path (in the location's file system)."""
    loc = locate(out_dir)
    name = part_name()
    if loc.is_local:  # temp name, fsync, rename
        out = Path(loc.path)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final = out / name
        os.replace(tmp, final)
        return str(final)
    # a bucket: the whole file is made in memory first, so the upload carries a finished file or nothing
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = f"{loc.path}/{name}"
    try:
        with loc.fs.open_output_stream(path) as out:
            out.write(sink.getvalue())
    except OSError as exc:
        raise DatasetError(f"cannot write a part to {loc.uri}: {first_line(exc)}") from None
    return path


class PartWriter:
    """Buffers tables and commits them as one part every `rows_per_part` rows or `part_seconds` seconds, whichever
    comes first: the work a crash can lose is bounded by that, whatever the dataset size. Use as a context manager
    (the rest is committed on a clean exit)."""

    def __init__(self, out_dir: "str | os.PathLike[str] | Location", rows_per_part: int,
                 part_seconds: float = float("inf")):
        self.out = locate(out_dir)
        self.rows_per_part, self.part_seconds = rows_per_part, part_seconds
        self.parts: list[str] = []
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._last = time.perf_counter()

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.rows_per_part or time.perf_counter() - self._last >= self.part_seconds:
            self.commit()

    def commit(self) -> None:
        if self._pending:
            self.parts.append(write_part(pa.concat_tables(self._pending), self.out))
        self._pending, self._rows, self._last = [], 0, time.perf_counter()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()


def part_infos(where: "str | os.PathLike[str] | Location", missing_ok: bool = False) -> list[pafs.FileInfo]:
    """Data files of a dataset, sorted by path: ours (part-*.parquet) or Spark's (part-*.snappy.parquet); hidden,
    temporary and '_' names (Spark's _temporary, our _reducer) skipped. A bucket has no folders: an empty prefix is
    an empty dataset there."""
    loc = locate(where)
    if loc.is_local and not Path(loc.path).is_dir():
        if missing_ok:
            return []
        raise DatasetError(f"embeddings folder not found: {loc.uri}")
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise DatasetError(f"cannot list {loc.uri}: {first_line(exc)}") from None
    base = loc.path.rstrip("/") + "/"
    return sorted((i for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and not any(p.startswith((".", "_")) for p in i.path[len(base):].split("/"))),
                  key=lambda i: i.path)


def part_files(where: "str | os.PathLike[str] | Location", missing_ok: bool = False) -> list[str]:
    """The paths of `part_infos`."""
    return [i.path for i in part_infos(where, missing_ok)]


def prepare(path: "str | os.PathLike[str] | Location", mode: str) -> None:
    """Ready a dataset folder for an embed run: "append" keeps its parts, "replace" deletes them, "new" refuses a
    folder that already holds embeddings."""
    if mode not in ("append", "replace", "new"):
        raise ValueError(f"unknown dataset mode {mode!r}")
    loc = locate(path)
    if mode == "append" or not has_data(loc):
        return
    if mode == "new":
        raise DatasetError(f"{loc.uri} already holds embeddings; choose another --out or pass --overwrite")
    for f in part_files(loc):
        loc.fs.delete_file(f)


def union_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """Every column any part has, typed as SCHEMA types it (parts of several writers differ in physical types, e.g.
    Spark's naive nanosecond timestamps: the dataset casts each part to this)."""
    fields: dict[str, pa.Field] = {}
    for sch in schemas:
        for f in sch:
            fields.setdefault(f.name, SCHEMA.field(f.name) if f.name in SCHEMA.names else f)
    return pa.schema(list(fields.values()), metadata=schemas[0].metadata)


def has_data(path: "str | os.PathLike[str] | Location") -> bool:
    return bool(part_infos(path, missing_ok=True))


def open_dataset(path: "str | os.PathLike[str] | Location") -> ds.Dataset:
    loc = locate(path)
    files = part_files(loc)
    if not files:
        raise DatasetError(f"no embeddings (Parquet part files) in {loc.uri}; run 'imgsearch embed' first")
    try:
        # parts written before a column existed (tags) lack it: the dataset's schema is the union of its parts'
        # (read from the footers only), so those rows read as null instead of the column vanishing
        schemas = [pq.read_schema(f, filesystem=loc.fs) for f in files]
        schema = schemas[0] if all(s.equals(schemas[0]) for s in schemas[1:]) else union_schema(schemas)
        dataset = ds.dataset(files, format="parquet", schema=schema, filesystem=loc.fs)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{loc.uri}: not a readable Parquet dataset: {exc}") from None
    missing = {"id", "path", "vector", "model", "dim"} - set(dataset.schema.names)
    if missing:
        raise DatasetError(f"{loc.uri}: not an imgsearch embeddings dataset (missing columns: {', '.join(sorted(missing))})")
    return dataset


@dataclass
class DatasetSummary:
    rows: int
    embedded: int
    failed: int
    models: dict[str, int]  # model name -> dim


def summarize(path: "str | os.PathLike[str] | Location") -> DatasetSummary:
    dataset = open_dataset(path)
    table = dataset.to_table(columns=["model", "dim", "error"])
    failed = int(pc.sum(pc.is_valid(table["error"])).as_py() or 0) if table.num_rows else 0
    ok = table.filter(pc.is_null(table["error"])) if table.num_rows else table
    # one (model, dim) per model, computed in Arrow: no Python object per row (a million rows stay cheap)
    pairs = ok.group_by("model", use_threads=False).aggregate([("dim", "first")]) if ok.num_rows else None
    models = dict(zip(pairs["model"].to_pylist(), pairs["dim_first"].to_pylist())) if pairs is not None else {}
    return DatasetSummary(rows=table.num_rows, embedded=table.num_rows - failed, failed=failed, models=models)


def iter_embedded(path: "str | os.PathLike[str] | Location", batch_rows: int = 2048,
                  columns: tuple[str, ...] = ("id", "path", "vector", "model", "dim", "width", "height", "bytes", "mtime",
                                              "format", "tags", "tag_scores"),
                  ids: set[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of the rows that have a vector (failures filtered out); only rows of `ids`, if given."""
    dataset = open_dataset(path)
    cols = [c for c in columns if c in dataset.schema.names]
    flt = pc.is_null(pc.field("error")) if "error" in dataset.schema.names else None
    if ids is not None:
        wanted = pc.field("id").isin(pa.array(sorted(ids), pa.string()))
        flt = wanted if flt is None else flt & wanted
    yield from dataset.to_batches(columns=cols, filter=flt, batch_size=batch_rows)


def read_rows(parts: list[str], columns: list[str], fs: pafs.FileSystem | None = None) -> dict[str, list]:
    """Some columns of some part files, as Python lists (for the small per-run summaries)."""
    out: dict[str, list] = {c: [] for c in columns}
    for part in parts:
        t = pq.read_table(part, columns=columns, filesystem=fs)
        for c in columns:
            out[c] += t.column(c).to_pylist()
    return out


def read_failures(path: "str | os.PathLike[str] | Location") -> list[dict]:
    dataset = open_dataset(path)
    if "error" not in dataset.schema.names:
        return []
    table = dataset.to_table(columns=["id", "path", "error", "model"], filter=pc.is_valid(pc.field("error")))
    return table.to_pylist()


def vectors_of(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The vector column as an (N, dim) float32 array, without a Python-level copy per row."""
    col = batch.column("vector")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if col.null_count:
        raise DatasetError("vector column has nulls in rows without an error")
    # Slicing keeps offsets relative; flatten() honours them.
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(col), -1)
