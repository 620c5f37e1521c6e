"""A Spark embed job: binaryFile listing and reading on any Hadoop file system, mapInArrow over the shared core,
and Spark's committer writing the Parquet dataset (v2: each task commits its part when it ends)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.errors import DatasetError, ImgSearchError
from imgsearch.jobs import EmbedJob, EmbedReport
from imgsearch.models import get_spec
from imgsearch.sources import FileRecord, read_by_workers, local_path

from imgsearch.engines.base import list_local
from imgsearch.engines.spark.io import bucket_frame, hadoop_hint, spark_ddl, too_large_rows, unread_rows, why_unread
from imgsearch.engines.spark.session import as_uri, first_line
from imgsearch.engines.spark.worker import only


def embed_files(spark, src: str, records: Sequence[FileRecord] | None, out: str, job: EmbedJob, *,
                mode: str = "append", partitions: int | None = None) -> EmbedReport:
    """Embed the files of `records` under `src` (a path or Hadoop URI) into the Parquet dataset at `out`.

    `mode` "append" adds parts to a local (file://) folder; "replace" and "new" write the dataset afresh (any
    Hadoop URI; "new" fails if it exists). Every record Spark did not read gets a failure row (deleted meanwhile, no
    permission, Hadoop-hidden names). `records=None`: every file under `src`. A killed job keeps every finished
    task's part.
    """
    job = replace(job, threads=1)  # one model thread per task: Spark runs a task per core
    spec = get_spec(job.model)
    started = time.perf_counter()
    src_uri, out_uri = as_uri(src), as_uri(out)
    local_out = local_path(out_uri) if out_uri.startswith("file:") else None
    if mode == "append" and local_out is None:
        raise ImgSearchError("incremental Spark runs write to a local or shared-mount folder (file://); "
                             f"for {out} pass --overwrite to write it afresh")
    before = set(dset.part_files(local_out)) if local_out and Path(local_out).is_dir() else set()
    # Image batches are large: keep Arrow batches to one model batch (the default is 10,000 rows).
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(job.batch_size))
    # A file deleted or unreadable after listing must not fail the job: it is skipped here and recorded below.
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    spark.conf.set("spark.sql.files.ignoreCorruptFiles", "true")
    if read_by_workers(src):  # listed by the driver, read by the Python workers (no Hadoop S3 connector needed)
        if records is None:
            records = list_local(src, job.buckets).records
        files = bucket_frame(spark, records, partitions)
    else:
        reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
        try:
            files = reader.load(src_uri)
        except Exception as exc:
            raise ImgSearchError(f"cannot list {src}: {hadoop_hint(src, exc)}") from None
    wanted = None
    if records is not None:
        wanted = frozenset(r.id for r in records)
        mtimes = [r.mtime for r in records if r.mtime is not None]
        if mtimes and len(mtimes) == len(records):  # cheap pre-filter in the JVM: new and changed files are recent
            files = files.filter(files.modificationTime >= min(mtimes).replace(microsecond=0)
                                 - timedelta(seconds=1))
    limit = job.max_file_bytes
    small = files.filter(files.length <= limit)
    if partitions:
        small = small.repartition(partitions)
    ddl = spark_ddl()
    result = small.mapInArrow(only(job, wanted), ddl)
    # Files over the size limit are never read: their failure rows are made here, from the listing alone.
    big = files.filter(files.length > limit).select("path", "length", "modificationTime")
    big_rows = list(too_large_rows(big.toArrow().to_batches(), spec.name, spec.dim, limit, wanted))
    if big_rows:
        result = result.unionByName(spark.createDataFrame(pa.Table.from_batches(big_rows).to_pandas(), schema=ddl))
    spark_mode = {"append": "append", "replace": "overwrite", "new": "errorifexists"}[mode]
    writer = result.write.mode(spark_mode).option("mapreduce.fileoutputcommitter.algorithm.version", "2")
    try:
        writer.parquet(out_uri)
    except Exception as exc:
        msg = first_line(exc)
        if "already exists" in msg:
            raise DatasetError(f"{out} already holds embeddings; choose another --out or pass --overwrite") from None
        raise ImgSearchError(f"Spark job failed: {msg}") from None

    if local_out is not None:  # read this run's rows here: cheaper than another Spark job
        new_parts = [p for p in dset.part_files(local_out) if p not in before] if mode == "append" \
            else dset.part_files(local_out)
        rows = dset.read_rows(new_parts, columns=["id", "path", "error"])
        written = set(rows["id"])
        missing = [r for r in records or [] if r.id not in written]
        if missing:
            dset.write_part(unread_rows(missing, spec.name, spec.dim), local_out)
            rows["id"] += [r.id for r in missing]
            rows["path"] += [r.uri for r in missing]
            rows["error"] += [why_unread(r.uri).message() for r in missing]
        failures = [(p, e) for p, e in zip(rows["path"], rows["error"]) if e is not None]
        total = len(rows["id"])
    else:
        done = spark.read.parquet(out_uri)
        failures = [(r.path, r.error) for r in done.filter(done.error.isNotNull()).select("path", "error").collect()]
        total = done.count()
    return EmbedReport(out_dir=out, model=job.model, dim=spec.dim, embedded=total - len(failures),
                       failed=len(failures), failures=sorted(failures), seconds=time.perf_counter() - started,
                       partitions=partitions or 0)
