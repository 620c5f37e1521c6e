"""What runs inside Spark's Python workers: the model cached per worker process, and the mapInArrow body that feeds
binaryFile rows through the shared core (imgsearch.core)."""

from __future__ import annotations

import functools
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import pyarrow as pa

from imgsearch.core import decode_record, embed_outcomes, read_record, worker_log
from imgsearch.imaging import SNIFF_BYTES
from imgsearch.jobs import EmbedJob
from imgsearch.models import Embedder
from imgsearch.sources import is_bucket, looks_like_image, read_bytes

from imgsearch.engines.spark.io import file_records

_EMBEDDERS: dict[tuple, Embedder] = {}


def task_device(job: EmbedJob) -> str:
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


def worker_embedder(job: EmbedJob) -> Embedder:
    """The model for this Python worker, loaded on first use and reused by every later batch and task."""
    device = task_device(job)
    key = (job.model, job.weights, job.precision, job.runtime, device, job.threads)
    emb = _EMBEDDERS.get(key)
    if emb is None:
        emb = job.create_embedder(device=device)
        _EMBEDDERS[key] = emb
        worker_log(job.worker_log, f"load {os.getpid()} t={time.time():.3f}")
        print(f"imgsearch: loaded {job.model} ({emb.runtime} {emb.precision}, {device}) in worker {os.getpid()}", file=sys.stderr)
    return emb


def embed_arrow_batches(batches: Iterator[pa.RecordBatch], job: EmbedJob) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: binaryFile rows (path, modificationTime, length, content) -> rows of the dataset schema.

    One helper thread decodes the next model batch while the model runs on this one (both release the GIL), so the
    worker's core is not left idle while bytes arrive from the JVM.
    """
    emb = worker_embedder(job)
    prep, max_pixels = emb.prep, job.max_pixels
    inflight: Future | None = None

    read = functools.partial(read_bytes, buckets=job.buckets)

    def decode_all(chunk):
        t0 = time.perf_counter()
        unread = [i for i, (rec, data) in enumerate(chunk) if data is None]  # bucket objects: read here, together
        if unread:
            with ThreadPoolExecutor(max_workers=min(job.io_threads, len(unread))) as io:
                got = io.map(lambda i: read_record(chunk[i][0], read, job.max_file_bytes), unread)
                for i, data in zip(unread, got):
                    chunk[i] = (chunk[i][0], data)
        outs = [decode_record(rec, data, prep, max_pixels) for rec, data in chunk]
        return outs, time.perf_counter() - t0

    def emit(outcomes, decode_s: float) -> Iterator[pa.RecordBatch]:
        t0 = time.perf_counter()
        table = embed_outcomes(emb, outcomes)
        worker_log(job.worker_log, f"batch {os.getpid()} {len(outcomes)} decode_s={decode_s:.4f} "
                   f"embed_s={time.perf_counter() - t0:.4f} t={time.time():.3f}")
        yield from table.to_batches()

    def step(chunk) -> Iterator[pa.RecordBatch]:
        """Start decoding `chunk`, then embed the chunk decoded before it (if any)."""
        nonlocal inflight
        previous, inflight = inflight, (pool.submit(decode_all, chunk) if chunk else None)
        if previous is not None:
            yield from emit(*previous.result())

    chunk: list = []
    # Unlike the local engine's, this decode thread keeps normal priority: it works only one chunk ahead, so at a
    # lower priority it waits behind the model's thread and the two run in turn (measured on 8,192 images: 75.0 s
    # with a lower priority, 66.5 s without).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsearch-decode") as pool:
        for batch in batches:
            contents = batch.column("content")
            for i, rec in file_records(batch):
                data = contents[i].as_py()
                if data is None and is_bucket(rec.uri):  # listed by the driver (candidates already), read in decode_all
                    chunk.append((rec, None))
                elif looks_like_image(rec.uri.rsplit("/", 1)[-1], (data or b"")[:SNIFF_BYTES]):
                    data = data or b""
                    chunk.append((rec, data))
                if len(chunk) >= job.batch_size:
                    yield from step(chunk)
                    chunk = []
        yield from step(chunk)  # the last, partial chunk
        yield from step([])  # and embed it


def only(job: EmbedJob, wanted: frozenset[str] | None):
    """mapInArrow body that keeps only the files of this run (by id) before the shared core sees them."""
    def fn(batches):
        if wanted is None:
            return embed_arrow_batches(batches, job)

        def kept():
            for b in batches:
                keep = [rec.id in wanted for _, rec in file_records(b)]
                if any(keep):
                    yield b.filter(pa.array(keep))

        return embed_arrow_batches(kept(), job)

    return fn
