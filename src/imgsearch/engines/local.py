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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.config import get_settings
from imgsearch.core import FileRecord, Outcome, decode_record, embed_outcomes, worker_log
from imgsearch.models import Embedder
from imgsearch.sources import read_bytes


@dataclass
class EmbedReport:
    """What an engine did: counts, failures with reasons, time. Both engines return one."""

    out_dir: Path | str
    model: str
    dim: int
    embedded: int = 0
    failed: int = 0
    skipped_non_images: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason)
    parts: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    partitions: int = 0  # Spark tasks, when the job repartitioned
    # what the run found already done (filled by pipeline.embed from its plan)
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    retried: int = 0
    failed_unchanged: int = 0
    removed: int = 0
    stale_removed: int = 0  # files gone from the source, still in the dataset because sync was off
    root: str = ""  # the source as a URI

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def embed_records(records: list[FileRecord], out_dir: str | os.PathLike[str], embedder: Embedder, *,
                  batch_size: int | None = None, workers: int | None = None, rows_per_part: int | None = None,
                  part_seconds: float | None = None, progress: bool | None = None) -> EmbedReport:
    """Embed `records` into part files added to `out_dir`; bad files become failure rows.

    A part is committed every `rows_per_part` rows or `part_seconds` seconds, whichever comes first: the work a crash
    can lose is bounded by that, whatever the collection size.
    """
    settings = get_settings()
    batch_size = batch_size or settings.batch_size
    workers = workers or settings.workers or (os.cpu_count() or 1)
    rows_per_part = rows_per_part or settings.rows_per_part
    part_seconds = settings.part_seconds if part_seconds is None else part_seconds
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    report = EmbedReport(out_dir=out, model=embedder.name, dim=embedder.dim)
    pending_tables: list[pa.Table] = []

    def commit() -> None:
        nonlocal pending_tables, buffered, last_commit
        if pending_tables:
            report.parts.append(dset.write_part(pa.concat_tables(pending_tables), out))
        pending_tables, buffered, last_commit = [], 0, time.perf_counter()

    show = sys.stderr.isatty() if progress is None else progress
    buffered, last_commit = 0, time.perf_counter()
    with _progress(len(records), show) as advance:
        for batch in _decoded_batches(records, embedder, workers, batch_size, settings.max_pixels):
            table = embed_outcomes(embedder, batch)
            worker_log(f"batch {os.getpid()} {len(batch)}")
            report.embedded += sum(1 for o in batch if o.error is None)
            report.failures.extend((o.record.uri, o.error) for o in batch if o.error is not None)
            pending_tables.append(table)
            buffered += table.num_rows
            advance(len(batch))
            if buffered >= rows_per_part or time.perf_counter() - last_commit >= part_seconds:
                commit()
        commit()

    report.seconds = time.perf_counter() - started
    report.failed = len(report.failures)
    return report


def _decoded_batches(records: list[FileRecord], embedder: Embedder, workers: int, batch_size: int,
                     max_pixels: int) -> Iterable[list[Outcome]]:
    """Yield lists of `batch_size` outcomes in source order while the pool decodes up to 4 batches ahead."""
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
                queue.append(pool.submit(decode_record, rec, read_bytes, prep, max_pixels))

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


class _progress:
    """A rich progress bar on a terminal; nothing otherwise (logs and CI stay clean)."""

    def __init__(self, total: int, show: bool):
        self.total, self.show = total, show
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), transient=False)
        self._bar.__enter__()
        task = self._bar.add_task("embedding", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
