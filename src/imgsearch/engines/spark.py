"""Spark engine: Spark lists and reads the files (any Hadoop file system: file://, hdfs://, s3a://, gs://, ...);
each task runs the shared core (imgsearch.core) on Arrow batches; Spark's committer writes the Parquet dataset.

The only module that imports pyspark. The model is loaded once per Python worker (workers are reused across tasks)
and kept in a module-level cache; on a GPU executor the task's assigned GPU is used.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from imgsearch.core import WORKER_LOG_ENV, FileRecord, decode_record, embed_outcomes, worker_log
from imgsearch.engines.local import EmbedReport
from imgsearch.dataset import SCHEMA
from imgsearch.errors import DatasetError, ImgSearchError
from imgsearch.imaging import SNIFF_BYTES
from imgsearch.sources import image_id, looks_like_image, normalize_uri

# Spark's view of dataset.SCHEMA (the same columns and types).
SPARK_SCHEMA = ("id string, path string, vector array<float>, model string, dim int, width int, height int, "
                "bytes long, mtime timestamp, format string, error string")
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


@dataclass(frozen=True)
class SparkJob:
    """What every task needs to know; pickled into the tasks."""

    model: str
    weights: str | None
    precision: str
    device: str
    batch_size: int
    max_pixels: int
    threads: int


_EMBEDDERS: dict[tuple, object] = {}


def _task_device(job: SparkJob) -> str:
    """The GPU Spark assigned to this task, if any; else the job's device setting."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            return f"cuda:{gpus.addresses[0]}"
    except Exception:  # pragma: no cover - resource API differences across Spark versions
        pass
    return "cpu" if job.device == "auto" else job.device


def worker_embedder(job: SparkJob):
    """The model for this Python worker, loaded on first use and reused by every later batch and task."""
    device = _task_device(job)
    key = (job.model, job.weights, job.precision, device, job.threads)
    emb = _EMBEDDERS.get(key)
    if emb is None:
        from imgsearch.models import create_model

        emb = create_model(job.model, weights=job.weights, device=device, precision=job.precision,
                           threads=job.threads)
        _EMBEDDERS[key] = emb
        worker_log(f"load {os.getpid()} t={time.time():.3f}")
        print(f"imgsearch: loaded {job.model} ({emb.precision}, {device}) in worker {os.getpid()}", file=sys.stderr)
    return emb


def _file_records(batch: pa.RecordBatch) -> Iterator[tuple[int, FileRecord]]:
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


def embed_arrow_batches(batches: Iterator[pa.RecordBatch], job: SparkJob) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: binaryFile rows (path, modificationTime, length, content) -> rows of the dataset schema.

    One helper thread decodes the next model batch while the model runs on this one (both release the GIL), so the
    worker's core is not left idle while bytes arrive from the JVM.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    emb = worker_embedder(job)
    prep, max_pixels = emb.prep, job.max_pixels
    inflight: Future | None = None

    def decode_all(chunk):
        t0 = time.perf_counter()
        outs = [decode_record(rec, data, prep, max_pixels) for rec, data in chunk]
        return outs, time.perf_counter() - t0

    def step(chunk) -> Iterator[pa.RecordBatch]:
        """Start decoding `chunk`, then embed the chunk decoded before it (if any)."""
        nonlocal inflight
        previous, inflight = inflight, (pool.submit(decode_all, chunk) if chunk else None)
        if previous is not None:
            yield from _emit(emb, *previous.result())

    chunk: list = []
    # Unlike the local engine's, this decode thread keeps normal priority: it works only one chunk ahead, so at a
    # lower priority it waits behind the model's thread and the two run in turn (measured on 8,192 images: 75.0 s
    # with a lower priority, 66.5 s without).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsearch-decode") as pool:
        for batch in batches:
            contents = batch.column("content")
            for i, rec in _file_records(batch):
                data = contents[i].as_py() or b""
                if looks_like_image(rec.uri.rsplit("/", 1)[-1], data[:SNIFF_BYTES]):
                    chunk.append((rec, data))
                if len(chunk) >= job.batch_size:
                    yield from step(chunk)
                    chunk = []
        yield from step(chunk)  # the last, partial chunk
        yield from step([])  # and embed it


def too_large_rows(batches: Iterator[pa.RecordBatch], job: SparkJob, limit: int) -> Iterator[pa.RecordBatch]:
    """Failure rows for files over the size limit (their content is never read), for names that look like images."""
    from imgsearch.core import Outcome
    from imgsearch.models import get_spec

    spec = get_spec(job.model)
    for batch in batches:
        outcomes = [Outcome(rec, error=f"file larger than {limit:,} bytes")
                    for _, rec in _file_records(batch) if looks_like_image(rec.uri.rsplit("/", 1)[-1])]
        if outcomes:
            yield from _failure_rows(outcomes, spec).to_batches()


def _emit(emb, outcomes, decode_s: float = 0.0) -> Iterator[pa.RecordBatch]:
    t0 = time.perf_counter()
    table = embed_outcomes(emb, outcomes)
    worker_log(f"batch {os.getpid()} {len(outcomes)} decode_s={decode_s:.4f} embed_s={time.perf_counter() - t0:.4f} "
                f"t={time.time():.3f}")
    yield from table.to_batches()


def _in_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ  # set when spark-submit launched this Python driver


def get_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "imgsearch"):
    """A SparkSession configured for image inference; under spark-submit, master and confs come from there."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ImgSearchError(f"the Spark engine needs pyspark: pip install 'imgsearch[spark]' ({exc})") from None
    # Workers must run this interpreter (with imgsearch and torch), and start with the tuned allocator.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    for k, v in ALLOCATOR_ENV.items():
        os.environ.setdefault(k, v)
    local = not _in_spark_submit() and (master or "local").startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local and local-cluster: stay on loopback
    builder = SparkSession.builder.appName(app_name)
    if master or not _in_spark_submit():
        builder = builder.master(master or "local[*]")
    defaults = {
        "spark.sql.session.timeZone": "UTC",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1" if local else "",
        "spark.driver.bindAddress": "127.0.0.1" if local else "",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
        # Image files are small next to Spark's 4 MB per-file open cost: without this a folder of small images
        # becomes one task per ~30 files, and task overheads dominate.
        "spark.sql.files.openCostInBytes": str(1024 * 1024),
        "spark.sql.files.maxPartitionBytes": str(64 * 1024 * 1024),
    }
    for k, v in ALLOCATOR_ENV.items():
        defaults[f"spark.executorEnv.{k}"] = v
    if os.environ.get(WORKER_LOG_ENV):
        defaults[f"spark.executorEnv.{WORKER_LOG_ENV}"] = os.environ[WORKER_LOG_ENV]
    for k, v in {**defaults, **(conf or {})}.items():
        if v != "":
            builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def stop_session() -> None:
    """Stop the active SparkSession, if any (the CLI does this when a command ends)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    spark = SparkSession.getActiveSession()
    if spark is not None:
        spark.stop()


def is_local_master(master: str | None) -> bool:
    return not _in_spark_submit() and (master or "local").startswith("local")


def list_files_spark(src: str, master: str | None = None, conf: dict[str, str] | None = None) -> list[FileRecord]:
    """Every file under a Hadoop URI with its size and mtime (Spark lists; file contents are not read)."""
    spark = get_session(master, conf)
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    try:
        listing = reader.load(_as_uri(src)).select("path", "length", "modificationTime").toArrow()
    except Exception as exc:
        raise ImgSearchError(f"cannot list {src}: {_first_line(exc)}") from None
    return [rec for batch in listing.to_batches() for _, rec in _file_records(batch)]


def _todo_filter(job: SparkJob, todo_ids: frozenset[str] | None):
    """mapInArrow body that keeps only the files of this run (by id) before the shared core sees them."""
    def fn(batches):
        if todo_ids is None:
            return embed_arrow_batches(batches, job)

        def wanted():
            for b in batches:
                keep = [rec.id in todo_ids for _, rec in _file_records(b)]
                if any(keep):
                    yield b.filter(pa.array(keep))

        return embed_arrow_batches(wanted(), job)

    return fn


def embed_files_spark(src: str, out: str, job: SparkJob, *, todo: list[FileRecord] | None = None,
                      master: str | None = None, partitions: int | None = None, conf: dict[str, str] | None = None,
                      overwrite: bool = False, max_file_bytes: int = 512 * 1024 * 1024) -> EmbedReport:
    """Embed the images under `src` (a path or Hadoop URI) into the Parquet dataset at `out` with Spark.

    `todo`: only these files (an incremental run; the output is a local folder and parts are *added* to it). Each task
    commits its part file when it ends (the v2 file committer), so a killed job keeps every finished task's work.
    Files Spark could not read (deleted meanwhile, no permission, Hadoop-hidden names) get failure rows here.
    Without `todo`, the whole source is written afresh (`overwrite` replaces what is there).
    """
    from imgsearch import dataset as dset
    from imgsearch.models import get_spec
    from imgsearch.sources import uri_to_path

    spec = get_spec(job.model)
    spark = get_session(master, conf)
    started = time.perf_counter()
    src_uri, out_uri = _as_uri(src), _as_uri(out)
    local_out = uri_to_path(normalize_uri(out_uri)) if out_uri.startswith("file:") else None
    if todo is not None and local_out is None:
        raise ImgSearchError("incremental Spark runs write to a local or shared-mount folder (file://); "
                             f"for {out} pass --overwrite to write it afresh")
    before = set(dset.part_files(local_out)) if local_out and Path(local_out).is_dir() else set()
    # Image batches are large: keep Arrow batches to one model batch (the default is 10,000 rows).
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(job.batch_size))
    # A file deleted or unreadable after listing must not fail the job: it is skipped here and recorded below.
    spark.conf.set("spark.sql.files.ignoreMissingFiles", "true")
    spark.conf.set("spark.sql.files.ignoreCorruptFiles", "true")
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    try:
        files = reader.load(src_uri)
    except Exception as exc:
        raise ImgSearchError(f"cannot list {src}: {_first_line(exc)}") from None
    todo_ids = None
    if todo is not None:
        todo_ids = frozenset(r.id for r in todo)
        mtimes = [r.mtime for r in todo if r.mtime is not None]
        if mtimes and len(mtimes) == len(todo):  # cheap pre-filter in the JVM: new and changed files are recent
            files = files.filter(files.modificationTime >= min(mtimes).replace(microsecond=0)
                                 - timedelta(seconds=1))
    small = files.filter(files.length <= max_file_bytes)
    if partitions:
        small = small.repartition(partitions)
    result = small.mapInArrow(_todo_filter(job, todo_ids), SPARK_SCHEMA)
    # Files over the size limit are never read: their failure rows are made here, from the listing alone.
    big = files.filter(files.length > max_file_bytes).select("path", "length", "modificationTime")
    big_rows = [b for b in too_large_rows(big.toArrow().to_batches(), job, max_file_bytes)
                if todo_ids is None or any(i in todo_ids for i in b.column("id").to_pylist())]
    if big_rows:
        result = result.unionByName(spark.createDataFrame(pa.Table.from_batches(big_rows).to_pandas(),
                                                          schema=SPARK_SCHEMA))
    mode = "append" if todo is not None else ("overwrite" if overwrite else "errorifexists")
    writer = result.write.mode(mode).option("mapreduce.fileoutputcommitter.algorithm.version", "2")
    try:
        writer.parquet(out_uri)
    except Exception as exc:
        msg = _first_line(exc)
        if "already exists" in msg:
            raise DatasetError(f"{out} already holds embeddings; choose another --out or pass --overwrite") from None
        raise ImgSearchError(f"Spark job failed: {msg}") from None

    if local_out is not None:  # read this run's rows here: cheaper than another Spark job
        new_parts = [p for p in dset.part_files(local_out) if p not in before]
        rows = dset.read_rows(new_parts, columns=["id", "path", "error"])
        if todo is not None:
            written = set(rows["id"])
            missing = [r for r in todo if r.id not in written]
            if missing:
                dset.write_part(_unread_rows(missing, spec), local_out)
                rows["id"] += [r.id for r in missing]
                rows["path"] += [r.uri for r in missing]
                rows["error"] += [_why_unread(r.uri) for r in missing]
        failures = [(p, e) for p, e in zip(rows["path"], rows["error"]) if e is not None]
        total = len(rows["id"])
    else:
        written = spark.read.parquet(out_uri)
        failures = [(r.path, r.error) for r in written.filter(written.error.isNotNull()).select("path", "error").collect()]
        total = written.count()
    return EmbedReport(out_dir=out, model=job.model, dim=spec.dim, embedded=total - len(failures),
                       failed=len(failures), failures=sorted(failures), seconds=time.perf_counter() - started,
                       partitions=partitions or 0)


def _why_unread(uri: str) -> str:
    """Why Spark produced no row for a listed file (it skips what it cannot read when told to)."""
    from imgsearch.sources import uri_to_path

    if not uri.startswith("file:"):
        return "not read by Spark: missing, unreadable or Hadoop-hidden ('_' or '.' name)"
    path = uri_to_path(uri)
    if not os.path.lexists(path):
        return "file disappeared before it could be read"
    if os.path.isdir(path):
        return "is a directory, not a file"
    if not os.access(path, os.R_OK):
        return "cannot read file: permission denied"
    if any(part.startswith(("_", ".")) for part in Path(path).parts):
        return "not read by Spark: Hadoop hides names that start with '_' or '.' (use the local engine, or rename)"
    return "not read by Spark (unreadable file)"


def _unread_rows(records: list[FileRecord], spec) -> pa.Table:
    from imgsearch.core import Outcome

    return _failure_rows([Outcome(r, error=_why_unread(r.uri)) for r in records], spec)


def _failure_rows(outcomes, spec) -> pa.Table:
    from imgsearch.core import failure_table

    return failure_table(outcomes, spec.name, spec.dim)


def _moments_of(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: one row per task with n, column sums and X^T X of its vectors (float64 bytes)."""
    from imgsearch.dataset import vectors_of
    from imgsearch.reduce import Moments

    m = Moments()
    for b in batches:
        m.add(vectors_of(b))
    if m.n:
        yield pa.RecordBatch.from_arrays(
            [pa.array([m.n], pa.int64()), pa.array([len(m.total)], pa.int32()),
             pa.array([m.total.tobytes()], pa.binary()), pa.array([m.gram.tobytes()], pa.binary())],
            names=["n", "dim", "total", "gram"])


def fit_moments_spark(uri: str, master: str | None = None):
    """PCA's sufficient statistics computed by Spark tasks and summed on the driver (exact; memory O(dim^2))."""
    import numpy as np

    from imgsearch.reduce import Moments

    spark = get_session(master)
    df = spark.read.parquet(_as_uri(uri)).filter("error IS NULL").select("vector")
    total = Moments()
    for row in df.mapInArrow(_moments_of, "n long, dim int, total binary, gram binary").toLocalIterator():
        d = row.dim
        total = total.merge(Moments(row.n, np.frombuffer(row.total, np.float64).copy(),
                                    np.frombuffer(row.gram, np.float64).reshape(d, d).copy()))
    return total


def iter_parquet_batches(uri: str, batch_rows: int = 2048, master: str | None = None) -> Iterator[pa.RecordBatch]:
    """Embedded rows of a dataset on any Hadoop file system, streamed to the driver (for loading into Milvus)."""
    spark = get_session(master)
    df = spark.read.parquet(_as_uri(uri)).filter("error IS NULL").select(
        "id", "path", "vector", "model", "dim", "width", "height", "bytes", "mtime")
    rows = []
    for row in df.toLocalIterator(prefetchPartitions=True):
        rows.append(row.asDict())
        if len(rows) >= batch_rows:
            yield _rows_to_batch(rows)
            rows = []
    if rows:
        yield _rows_to_batch(rows)


def _rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    cols = ["id", "path", "vector", "model", "dim", "width", "height", "bytes", "mtime"]
    schema = pa.schema([SCHEMA.field(c) for c in cols])
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def _as_uri(path: str) -> str:
    return path if "://" in path else Path(path).expanduser().resolve().as_uri()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "JVM stacktrace", "---")):
            return line[:500]
    return type(exc).__name__


def main() -> None:
    """spark-submit entry: the same command line as `imgsearch` (use `embed ... --engine spark`)."""
    from imgsearch.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
