"""A third engine, written for the test suite as a user would write one: one module, one `register_engine` call.

It embeds in this process, one file at a time, with no threads: the simplest scheduler of the shared core. It must
pass the same contract tests as `local` and `spark` (tests/helpers.check_engine_contract).
"""

from __future__ import annotations

import os
import time
from typing import Iterator, Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.core import decode_record, embed_outcomes
from imgsearch.engines import DATASET_COLUMNS, Engine, register_engine
from imgsearch.engines.base import list_local
from imgsearch.errors import SourceError
from imgsearch.jobs import EmbedJob, EmbedReport, Listing
from imgsearch.sources import FileRecord, is_remote, read_bytes


class SequentialEngine(Engine):
    name = "sequential"

    def can_read(self, uri: str) -> bool:
        return not is_remote(uri) and not uri.startswith("file:")

    def list(self, src: str) -> Listing:
        if not self.can_read(src):
            raise SourceError(f"{src}: the sequential engine reads plain local paths only")
        return list_local(src)

    def embed(self, src: str, records: Sequence[FileRecord], out: str, job: EmbedJob, *,
              mode: str = "append") -> EmbedReport:
        dset.prepare(out, mode)
        started = time.perf_counter()
        embedder = job.create_embedder()
        rep = EmbedReport(out_dir=out, model=embedder.name, dim=embedder.dim)
        with dset.PartWriter(out, job.rows_per_part, job.part_seconds) as writer:
            for rec in records:
                outcome = decode_record(rec, read_bytes, embedder.prep, job.max_pixels, job.max_file_bytes)
                writer.add(embed_outcomes(embedder, [outcome]))
                if outcome.error is None:
                    rep.embedded += 1
                else:
                    rep.failures.append((rec.uri, outcome.error))
        rep.parts, rep.failed, rep.seconds = writer.parts, len(rep.failures), time.perf_counter() - started
        return rep

    def stream_rows(self, data: str, columns: Sequence[str] = DATASET_COLUMNS,
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        yield from dset.iter_embedded(os.fspath(data), batch_rows=batch_rows, columns=tuple(columns))


register_engine("sequential", SequentialEngine)
