"""Single-machine engine: list files, decode in a thread pool (Pillow releases the GIL), embed in batches, write Parquet.

Decoding runs ahead of inference in a bounded window, so memory stays flat whatever the collection size.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.core import Outcome, decode_record, embed_outcomes, worker_log
from imgsearch.engines.base import DATASET_COLUMNS, Engine, list_local
from imgsearch.errors import SourceError
from imgsearch.jobs import EmbedJob, EmbedReport, Listing
from imgsearch.models import Embedder
from imgsearch.progress import progress
from imgsearch.sources import (FileRecord, is_remote, local_path, read_bytes)


class LocalEngine(Engine):
    """This machine: the listing walks local folders, a thread pool decodes, one model embeds, parts are committed
    every `rows_per_part` rows or `part_seconds` seconds."""

    name = "local"

    def can_read(self, uri: str) -> bool:
        return not is_remote(uri)

    def _require_local(self, uri: str) -> None:
        if is_remote(uri):
            raise SourceError(f"{uri}: the local engine reads local folders only; use --engine spark")

    def list(self, src: str) -> Listing:
        self._require_local(src)
        return list_local(src)

    def embed(self, src: str, records: Sequence[FileRecord], out: str, job: EmbedJob, *,
              mode: str = "append") -> EmbedReport:
        self._require_local(out)
        out_dir = Path(local_path(out))
        dset.prepare(out_dir, mode)
        return embed_records(list(records), out_dir, job.create_embedder(), job)

    def stream_rows(self, data: str, columns: Sequence[str] = DATASET_COLUMNS,
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        self._require_local(data)
        yield from dset.iter_embedded(local_path(data), batch_rows=batch_rows, columns=tuple(columns))


def embed_records(records: list[FileRecord], out_dir: str | os.PathLike[str], embedder: Embedder,
                  job: EmbedJob) -> EmbedReport:
    """Embed `records` into part files added to `out_dir` with a loaded model; bad files become failure rows.

    A part is committed every `job.rows_per_part` rows or `job.part_seconds` seconds, whichever comes first: the
    work a crash can lose is bounded by that, whatever the collection size.
    """
    workers = job.workers or (os.cpu_count() or 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = EmbedReport(out_dir=out, model=embedder.name, dim=embedder.dim)
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
    report.failed = len(report.failures)
    return report


def _decoded_batches(records: list[FileRecord], embedder: Embedder, workers: int,
                     job: EmbedJob) -> Iterable[list[Outcome]]:
    """Yield lists of `batch_size` outcomes in source order while the pool decodes up to 4 batches ahead."""
    batch_size = job.batch_size
    window = max(batch_size * 4, workers * 2)
    prep = embedder.prep
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgsearch-decode",
                            initializer=lower_priority) as pool:
        queue: deque[Future[Outcome]] = deque()
        it = iter(records)

        def fill() -> None:
            while len(queue) < window:
                rec = next(it, None)
                if rec is None:
                    return
                queue.append(pool.submit(decode_record, rec, read_bytes, prep, job.max_pixels, job.max_file_bytes))

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
