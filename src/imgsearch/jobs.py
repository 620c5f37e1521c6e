"""What an engine is asked to do and what it reports back: neutral descriptions shared by the pipeline and engines.

An `EmbedJob` is plain data (it is pickled into Spark tasks), built once from Settings at the pipeline's edge; an
engine reads nothing else to know how to embed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgsearch.buckets import BucketConfig
from imgsearch.config import Settings
from imgsearch.failures import Reason
from imgsearch.models import Embedder, create_model
from imgsearch.sources import FileRecord, image_id


@dataclass(frozen=True)
class EmbedJob:
    """How to embed: the model and every tunable the engines apply."""

    model: str
    weights: str | None = None
    precision: str = "auto"
    runtime: str = "auto"
    cache_dir: str = ""
    device: str = "auto"
    batch_size: int = 32
    max_pixels: int = 100_000_000
    max_file_bytes: int = 512 * 1024 * 1024
    threads: int = 0  # torch intra-op threads of one model (0 = all cores); Spark runs one thread per task
    workers: int = 0  # decode threads of the local engine (0 = all cores)
    rows_per_part: int = 4096
    part_seconds: float = 20.0
    worker_log: str = ""  # see Settings.worker_log
    progress: bool | None = None  # a progress bar (None: when stderr is a terminal)
    buckets: BucketConfig = BucketConfig()  # how to reach s3:// and gs:// sources
    io_threads: int = 16  # concurrent object reads of the local engine over a bucket (latency hidden behind the model)

    @classmethod
    def from_settings(cls, settings: Settings, model: str, *, weights: str | None = None,
                      batch_size: int | None = None, workers: int | None = None,
                      progress: bool | None = None) -> "EmbedJob":
        s = settings
        return cls(model=model, weights=weights, precision=s.precision, runtime=s.runtime,
                   cache_dir=s.cache_dir, device=s.device,
                   batch_size=batch_size or s.batch_size, max_pixels=s.max_pixels, max_file_bytes=s.max_file_bytes,
                   threads=s.torch_threads, workers=workers or s.workers, rows_per_part=s.rows_per_part,
                   part_seconds=s.part_seconds, worker_log=s.worker_log, progress=progress,
                   buckets=buckets_of(s), io_threads=s.io_threads)

    def create_embedder(self, device: str | None = None, threads: int | None = None) -> Embedder:
        return create_model(self.model, weights=self.weights, device=device or self.device,
                            precision=self.precision, runtime=self.runtime, cache_dir=self.cache_dir or None,
                            threads=self.threads if threads is None else threads)


def buckets_of(settings: Settings) -> BucketConfig:
    return BucketConfig(endpoint=settings.s3_endpoint, region=settings.s3_region, anonymous=settings.s3_anonymous,
                        gcs_endpoint=settings.gcs_endpoint, gcs_anonymous=settings.gcs_anonymous,
                        azure_account=settings.azure_account, azure_endpoint=settings.azure_endpoint)


@dataclass
class Listing:
    """What an engine found under a source: the files, what could not be stat'ed or listed, and the root URI."""

    records: list[FileRecord]
    root: str  # the source as a normalised URI: rows under it belong to this source
    unreadable: dict[str, tuple[FileRecord, str]] = field(default_factory=dict)  # id -> (record, failure message)
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed: nothing under is removed
    skipped_non_images: int = 0

    @classmethod
    def from_unreadable(cls, records: list[FileRecord], root: str, unreadable: list[tuple[str, Reason, str]],
                        skipped_non_images: int = 0) -> "Listing":
        return cls(records=records, root=root, skipped_non_images=skipped_non_images,
                   unreadable={image_id(uri): (FileRecord(uri, image_id(uri), None, None), msg)
                               for uri, _, msg in unreadable},
                   unlisted=[uri for uri, reason, _ in unreadable if reason is Reason.CANNOT_LIST])


@dataclass
class EmbedReport:
    """What an embed run did: counts, failures with reasons, time. Every engine returns one."""

    out_dir: Path | str
    model: str
    dim: int
    embedded: int = 0
    failed: int = 0
    skipped_non_images: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason)
    parts: list[str] = field(default_factory=list)  # committed part files (paths in their file system)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU this process used while embedding (local engine; 0 = not measured)
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
