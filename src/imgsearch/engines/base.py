"""The engine interface: what every scheduler of the shared core implements, with the same signatures.

An engine lists a source, embeds planned records into a dataset folder, computes PCA moments and streams a
dataset's rows. It decides *where* work runs (threads here, Spark tasks on a cluster), never *what* a row holds:
that is `imgsearch.core`. The pipeline holds an engine as a context manager, so whatever it starts (a Spark session)
is stopped when the use case ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import pyarrow as pa

from imgsearch import dataset as dset
from imgsearch.config import Settings
from imgsearch.jobs import EmbedJob, EmbedReport, Listing
from imgsearch.reduce import Moments
from imgsearch.buckets import BucketConfig
from imgsearch.sources import FileRecord, ListingReport, is_bucket, list_images, local_path, normalize_uri, path_to_uri

DATASET_COLUMNS = ("id", "path", "vector", "model", "dim", "width", "height", "bytes", "mtime", "format", "tags",
                   "tag_scores")


@dataclass(frozen=True)
class EngineOptions:
    """Every engine's options, in one place. Each engine reads the ones it knows.

    master, partitions, conf: Spark (master URL, None = local[*] or spark-submit's; tasks; extra confs).
    """

    master: str | None = None
    partitions: int | None = None
    conf: dict[str, str] = field(default_factory=dict)


def list_local(src: str, buckets: BucketConfig | None = None) -> Listing:
    """A local folder's (or a bucket prefix's) candidate images, as every engine lists them: the walk records entries
    it could not stat and folders it could not list (nothing under those is ever removed), and sees names Hadoop
    would hide."""
    report = ListingReport()
    records = list(list_images(src, report, buckets))
    root = normalize_uri(src) if is_bucket(src) else path_to_uri(local_path(src))
    return Listing.from_unreadable(records, root, report.unreadable or [], report.skipped_non_images)


class Engine(ABC):
    """One way of scheduling the shared core. Subclasses register themselves with `engines.register_engine`."""

    name: str = ""
    #: work runs in other processes or machines: whole datasets are never pulled into this process.
    distributed: bool = False

    def __init__(self, options: EngineOptions, settings: Settings):
        self.options = options
        self.settings = settings

    # -- lifecycle: `with engine:` ------------------------------------------------------------------------------------
    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release what the engine started (a Spark session); the engine is not used afterwards."""

    # -- the contract -------------------------------------------------------------------------------------------------
    @abstractmethod
    def can_read(self, uri: str) -> bool:
        """Whether this engine can list, read and write files (or a dataset) at `uri`."""

    @abstractmethod
    def list(self, src: str) -> Listing:
        """Candidate images under `src` with size and mtime (contents are not read)."""

    @abstractmethod
    def embed(self, src: str, records: Sequence[FileRecord], out: str, job: EmbedJob, *,
              mode: str = "append") -> EmbedReport:
        """Embed `records` (found under `src`) into the dataset folder `out`: one row per record, failures
        included, committed in parts so that a killed run keeps what it finished.

        `mode`: "append" adds parts to the dataset (incremental runs); "replace" writes it afresh; "new" writes it
        afresh but fails if it already holds embeddings (the modes of a dataset on a remote file system)."""

    def fit_moments(self, data: str) -> Moments:
        """PCA's sufficient statistics (n, sum, X^T X) of every embedded vector of the dataset at `data`.

        Here: the vectors streamed through this process. A distributed engine overrides it to sum per task."""
        m = Moments()
        for b in self.stream_rows(data, columns=("vector",)):
            m.add(dset.vectors_of(b))
        return m

    @abstractmethod
    def stream_rows(self, data: str, columns: Sequence[str] = DATASET_COLUMNS,
                    batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        """The embedded rows (failures left out) of the dataset at `data`, in batches, into this process."""
