"""Single-machine engine: list files, decode in a thread pool (Pillow releases the GIL), embed in batches, write Parquet.

Decoding runs ahead of inference in a bounded window, so memory stays flat whatever the collection size. Objects in a
bucket are read by a wider pool of I/O threads ahead of the decoders, so the bucket's latency hides behind the model.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator, Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.config import usable_cpus
from imgsearch.core import Outcome, decode_record, embed_outcomes, read_record, worker_log
from imgsearch.engines.base import DATASET_COLUMNS, Engine, list_local
from imgsearch.errors import SourceError
from imgsearch.jobs import EmbedJob, EmbedReport, Listing, buckets_of
from imgsearch.models import Embedder
from imgsearch.progress import progress
from imgsearch.sources import FileRecord, is_bucket, is_hadoop_only, read_by_workers, read_bytes


class LocalEngine(Engine):
    """This machine: the listing walks local folders, a thread pool decodes, one model embeds, parts are committed
    every `rows_per_part` rows or `part_seconds` seconds."""

    name = "local"

    def can_read(self, uri: str) -> bool:
        return not is_hadoop_only(uri)

    def _require_reachable(self, uri: str) -> None:
        if is_hadoop_only(uri) or (is_bucket(uri) and not read_by_workers(uri)):
            raise SourceError(f"{uri}: the local engine keeps the embeddings dataset in a local folder or a bucket "
                              "(s3://, gs://, az://); --engine spark writes to Hadoop file systems (hdfs://, s3a://)")

    def list(self, src: str) -> Listing:
        return list_local(src, buckets_of(self.settings))  # refuses Hadoop-only URIs, as every listing does

    def embed(self, src: str, records: Sequence[FileRecord], out: str, job: EmbedJob, *,
              mode: str = "append") -> EmbedReport:
        self._require_reachable(out)
        out_dir = dset.locate(out, job.buckets)
        dset.prepare(out_dir, mode)
        return embed_records(list(records), out_dir, job.create_embedder(), job)

    def stream_rows(self, data: str, columns: Sequence[str] = DATASET_COLUMNS,
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        self._require_reachable(data)
        yield from dset.iter_embedded(dset.locate(data, buckets_of(self.settings)), batch_rows=batch_rows,
                                      columns=tuple(columns))


def embed_records(records: list[FileRecord], out_dir: "str | os.PathLike[str] | dset.Location", embedder: Embedder,
                  job: EmbedJob) -> EmbedReport:
    """Embed `records` into part files added to `out_dir` with a loaded model; bad files become failure rows.

    A part is committed every `job.rows_per_part` rows or `job.part_seconds` seconds, whichever comes first: the
    work a crash can lose is bounded by that, whatever the collection size.
    """
    workers = job.workers or usable_cpus()
    out = dset.locate(out_dir, job.buckets)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = EmbedReport(out_dir=out.report_name, model=embedder.name, dim=embedder.dim)
    show = sys.stderr.isatty() if job.progress is None else job.progress
    with progress(len(records), "embedding", show) as advance, \
            dset.PartWriter(out, job.rows_per_part, job.part_seconds) as writer:
        for batch in _decoded_batches(records, embedder, workers, job):
            table = embed_outcomes(embedder, batch)
            worker_log(job.worker_log, f"batch {os.getpid()} {len(batch)}")
            report.embedded += sum(1 for o in batch if o.error is None)
            report.failures.extend((o.record.uri, o.error) for o in batch if o.error is not None)
            writer.add(table)
            advance(len(batch))
    report.parts = writer.parts
    report.seconds = time.perf_counter() - started
    report.cpu_seconds = time.process_time() - cpu_started
    report.failed = len(report.failures)
    return report


def _decoded_batches(records: list[FileRecord], embedder: Embedder, workers: int,
                     job: EmbedJob) -> Iterable[list[Outcome]]:
    """Yield lists of `batch_size` outcomes in source order while the pool decodes up to 4 batches ahead (objects
    in a bucket: read by `job.io_threads` threads ahead of the decoders)."""
    batch_size = job.batch_size
    remote = any(is_bucket(r.uri) for r in records)
    window = max(batch_size * 4, workers * 2, job.io_threads * 2 if remote else 0)
    prep = embedder.prep
    read = functools.partial(read_bytes, buckets=job.buckets)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgsearch-decode",
                            initializer=lower_priority) as pool, \
            ThreadPoolExecutor(max_workers=job.io_threads if remote else 1, thread_name_prefix="imgsearch-io") as io:
        queue: deque[Future[Outcome]] = deque()
        it = iter(records)

        def submit(rec: FileRecord) -> Future[Outcome]:
            if not is_bucket(rec.uri):  # a local read is short: the decode thread does it
                return pool.submit(decode_record, rec, read, prep, job.max_pixels, job.max_file_bytes)
            done: Future[Outcome] = Future()

            def pass_on(f: Future) -> None:
                if f.exception() is not None:
                    done.set_exception(f.exception())  # a bug, not a bad file: it surfaces in the consumer
                else:
                    done.set_result(f.result())

            def decode_when_read(got: Future) -> None:
                if got.exception() is not None:
                    return pass_on(got)
                pool.submit(decode_record, rec, got.result(), prep, job.max_pixels).add_done_callback(pass_on)

            io.submit(read_record, rec, read, job.max_file_bytes).add_done_callback(decode_when_read)
            return done

        def fill() -> None:
            while len(queue) < window:
                rec = next(it, None)
                if rec is None:
                    return
                queue.append(submit(rec))

        fill()
        batch: list[Outcome] = []
        while queue:
            batch.append(queue.popleft().result())
            fill()
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


DECODE_NICE = 10


def lower_priority() -> None:
    """Decode threads yield to the model's threads (Linux niceness is per thread): they fill the gaps the model
    leaves instead of preempting it, and the window of decoded batches ahead absorbs the difference."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass
