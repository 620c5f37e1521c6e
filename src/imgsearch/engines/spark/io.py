"""Spark's side of the dataset and the listing: the schema as Spark DDL (derived from imgsearch.dataset), file
records from binaryFile rows, failure rows for files Spark did not read, and datasets streamed to the driver."""

from __future__ import annotations

import os
from datetime import timezone
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.core import Outcome, failed, failure_table
from imgsearch.errors import ImgSearchError
from imgsearch.failures import Reason
from imgsearch.sources import FileRecord, image_id, looks_like_image, normalize_uri, uri_to_path

from imgsearch.engines.spark.session import as_uri, first_line

_DDL_TYPES = {pa.string(): "string", pa.int32(): "int", pa.int64(): "long", pa.float32(): "float"}


def _ddl_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return f"array<{_ddl_type(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return _DDL_TYPES[t]


def spark_ddl(schema: pa.Schema = dset.SCHEMA, columns: Sequence[str] | None = None) -> str:
    """Spark's view of the dataset schema (the same columns and types), e.g. for mapInArrow's output."""
    names = columns or schema.names
    return ", ".join(f"{n} {_ddl_type(schema.field(n).type)}" for n in names)


def file_records(batch: pa.RecordBatch) -> Iterator[tuple[int, FileRecord]]:
    """(row index, FileRecord) for each binaryFile row, its Hadoop path normalised as the local engine does."""
    paths = batch.column("path").to_pylist()
    lengths = batch.column("length").to_pylist()
    mtimes = batch.column("modificationTime").to_pylist()
    for i, raw_path in enumerate(paths):
        uri = normalize_uri(raw_path)
        mtime = mtimes[i]
        if mtime is not None and mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=timezone.utc)
        yield i, FileRecord(uri=uri, id=image_id(uri), size=lengths[i], mtime=mtime)


S3A_PACKAGES = "org.apache.hadoop:hadoop-aws:{hadoop}"


def hadoop_hint(src: str, exc: BaseException) -> str:
    """The first line of a listing error; Hadoop's 'No FileSystem for scheme' made actionable: the connector a
    cluster needs for s3a:// (pyspark's jars have no S3A connector)."""
    message = first_line(exc)
    text = str(exc)
    missing = "No FileSystem for scheme" in text or "S3AFileSystem not found" in text
    if missing and src.lower().startswith(("s3a:", "s3n:")):
        return (f"no Hadoop file system for {src.split(':')[0]}://. Spark needs the S3A connector: "
                f"spark-submit --packages {S3A_PACKAGES.format(hadoop=hadoop_version())} (or write s3:// to let "
                "imgsearch's workers read the objects themselves)")
    return message


def hadoop_version() -> str:
    try:
        import pyspark

        jars = Path(pyspark.__file__).parent / "jars"
        [api] = [p.name for p in jars.glob("hadoop-client-api-*.jar")]
        return api[len("hadoop-client-api-"):-len(".jar")]
    except (ValueError, ImportError, OSError):
        return "<your Hadoop version>"


def bucket_frame(spark, records: Sequence[FileRecord], partitions: int | None):
    """binaryFile-shaped rows (path, modificationTime, length, content=null) for objects the driver listed: the
    workers read each object themselves, so no Hadoop connector is needed."""
    table = pa.table({"path": pa.array([r.uri for r in records], pa.string()),
                      "modificationTime": pa.array([r.mtime for r in records], pa.timestamp("us", tz="UTC")),
                      "length": pa.array([r.size for r in records], pa.int64()),
                      "content": pa.nulls(len(records), pa.binary())})
    frame = spark.createDataFrame(table.to_pandas(),
                                  schema="path string, modificationTime timestamp, length long, content binary")
    return frame.repartition(partitions or max(1, spark.sparkContext.defaultParallelism * 2))


def list_files(spark, src: str) -> list[FileRecord]:
    """Every file under a Hadoop URI with its size and mtime (Spark lists; file contents are not read)."""
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    try:
        listing = reader.load(as_uri(src)).select("path", "length", "modificationTime").toArrow()
    except Exception as exc:
        raise ImgSearchError(f"cannot list {src}: {hadoop_hint(src, exc)}") from None
    return [rec for batch in listing.to_batches() for _, rec in file_records(batch)]


def why_unread(uri: str) -> Reason:
    """Why Spark produced no row for a listed file (it skips what it cannot read when told to)."""
    if not uri.startswith("file:"):
        return Reason.NOT_READ_REMOTE
    path = uri_to_path(uri)
    if not os.path.lexists(path):
        return Reason.DISAPPEARED
    if os.path.isdir(path):
        return Reason.IS_DIRECTORY
    if not os.access(path, os.R_OK):
        return Reason.PERMISSION
    if any(part.startswith(("_", ".")) for part in Path(path).parts):
        return Reason.HADOOP_HIDDEN
    return Reason.NOT_READ


def unread_rows(records: Sequence[FileRecord], model: str, dim: int) -> pa.Table:
    return failure_table([failed(r, why_unread(r.uri)) for r in records], model, dim)


def too_large_rows(batches: Iterator[pa.RecordBatch], model: str, dim: int, limit: int,
                   wanted: frozenset[str] | None) -> Iterator[pa.RecordBatch]:
    """Failure rows for files over the size limit (their content is never read), for names that look like images."""
    for batch in batches:
        outcomes: list[Outcome] = [failed(rec, Reason.TOO_LARGE, limit=limit) for _, rec in file_records(batch)
                                   if looks_like_image(rec.uri.rsplit("/", 1)[-1])
                                   and (wanted is None or rec.id in wanted)]
        if outcomes:
            yield from failure_table(outcomes, model, dim).to_batches()


def stream_parquet(spark, uri: str, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Embedded rows of a dataset on any Hadoop file system, streamed to the driver (for loading into Milvus)."""
    # mergeSchema: parts written before a column existed (tags) must not hide it in the newer parts
    df = spark.read.option("mergeSchema", "true").parquet(as_uri(uri)).filter("error IS NULL")
    columns = [c for c in columns if c in df.columns]
    df = df.select(*columns)
    schema = pa.schema([dset.SCHEMA.field(c) for c in columns])
    rows = []
    for row in df.toLocalIterator(prefetchPartitions=True):
        rows.append(row.asDict())
        if len(rows) >= batch_rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)
