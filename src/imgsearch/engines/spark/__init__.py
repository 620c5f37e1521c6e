"""Spark engine: Spark lists and reads the files (any Hadoop file system: file://, hdfs://, s3a://, gs://, ...);
each task runs the shared core (imgsearch.core) on Arrow batches; Spark's committer writes the Parquet dataset.

The only package that imports pyspark. Its modules each hold one thing: `session` (the SparkSession), `worker`
(what runs in Python workers: the model cached per worker, the mapInArrow body), `embed` (the embed job), `moments`
(PCA statistics), `io` (schema as DDL, file records, failure rows, streaming a dataset to the driver).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import pyarrow as pa

from imgsearch.engines.base import DATASET_COLUMNS, Engine, list_local
from imgsearch.jobs import EmbedJob, EmbedReport, Listing, buckets_of
from imgsearch.reduce import Moments
from imgsearch.sources import FileRecord, read_by_workers, is_remote, looks_like_image, normalize_uri

from imgsearch.engines.spark import embed as _embed
from imgsearch.engines.spark import io, moments, session


class SparkEngine(Engine):
    """Spark: local[*], local-cluster[N,C,MB], standalone, YARN or Kubernetes, by `EngineOptions.master`."""

    name = "spark"
    distributed = True

    _spark = None
    _owns_session = False

    def session(self):
        """The SparkSession, started on first use (or the one already active: a notebook's, spark-submit's)."""
        if self._spark is None:
            try:
                existing = session.active_session()
            except ImportError:
                existing = None
            self._spark = session.get_session(self.options.master, self.options.conf)
            self._owns_session = existing is None and not session.in_spark_submit()
        return self._spark

    def close(self) -> None:
        if self._spark is not None and self._owns_session:
            self._spark.stop()
        self._spark = None

    def can_read(self, uri: str) -> bool:
        return True  # any Hadoop file system, local paths included

    def list(self, src: str) -> Listing:
        if not is_remote(src):  # a local folder: the same walk as the local engine (it sees '_' names, which
            return list_local(src)  # Spark skips: they get failure rows saying so instead of vanishing)
        if read_by_workers(src):  # s3:// (and gs://): listed here, objects read by the Python workers
            return list_local(src, buckets_of(self.settings))
        files = io.list_files(self.session(), src)
        records = [r for r in files if looks_like_image(r.uri.rsplit("/", 1)[-1])]
        return Listing(records=records, root=normalize_uri(src).rstrip("/"),
                       skipped_non_images=len(files) - len(records))

    def embed(self, src: str, records: Sequence[FileRecord], out: str, job: EmbedJob, *,
              mode: str = "append") -> EmbedReport:
        return _embed.embed_files(self.session(), src, records, out, job, mode=mode,
                                  partitions=self.options.partitions)

    def fit_moments(self, data: str) -> Moments:
        return moments.fit_moments(self.session(), data)

    def stream_rows(self, data: str, columns: Sequence[str] = DATASET_COLUMNS,
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        yield from io.stream_parquet(self.session(), data, list(columns), batch_rows)


__all__ = ["SparkEngine"]
