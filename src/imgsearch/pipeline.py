"""Use cases the CLI (and later the server) call: embed, load, index, search. Plain functions over the stages."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsearch import dataset as dset
from imgsearch.config import get_settings
from imgsearch.core import FileRecord, decode_record
from imgsearch.engines.local import EmbedReport, embed_source
from imgsearch.errors import ImgSearchError, ModelError
from imgsearch.models import Embedder, create_model
from imgsearch.sources import image_id, path_to_uri, read_bytes
from imgsearch.store import CollectionInfo, Hit, open_store


def make_embedder(model: str, weights: str | None = None, precision: str | None = None,
                  device: str | None = None) -> Embedder:
    s = get_settings()
    return create_model(model, weights=weights, device=device or s.device, precision=precision or s.precision,
                        threads=s.torch_threads)


@dataclass
class SparkOptions:
    """How to run the Spark engine: master URL (None: local[*], or spark-submit's), partitions, extra confs."""

    master: str | None = None
    partitions: int | None = None
    conf: dict[str, str] = field(default_factory=dict)


def embed(src: str, out: str, model: str, *, weights: str | None = None, overwrite: bool = False,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None,
          engine: str = "local", spark: SparkOptions | None = None):
    """Embed every image under `src` into a Parquet dataset at `out` with the chosen engine."""
    if engine == "spark":
        from imgsearch.engines.spark import SparkJob, embed_source_spark

        s = get_settings()
        job = SparkJob(model=model, weights=weights, precision=s.precision, device=s.device,
                       batch_size=batch_size or s.batch_size, max_pixels=s.max_pixels, threads=1)
        opts = spark or SparkOptions()
        return embed_source_spark(src, out, job, master=opts.master, partitions=opts.partitions, conf=opts.conf,
                                  overwrite=overwrite)
    if engine != "local":
        raise ImgSearchError(f"unknown engine {engine!r}: use local or spark")
    embedder = make_embedder(model, weights)
    return embed_source(src, out, embedder, batch_size=batch_size, workers=workers, overwrite=overwrite,
                        progress=progress)


@dataclass
class LoadReport:
    written: dict[str, int]
    failed_rows: int
    counts: dict[str, int]


def load(data_dir: str | os.PathLike[str], db: str, spark: SparkOptions | None = None) -> LoadReport:
    """Upsert a dataset's vectors into Milvus, in batches from this process. A dataset on a Hadoop file system
    (hdfs://, s3a://, ...) is streamed to this process through Spark."""
    s = get_settings()
    data = os.fspath(data_dir)
    remote = "://" in data and not data.startswith("file:")
    if remote:
        from imgsearch.engines.spark import iter_parquet_batches

        batches = iter_parquet_batches(data, master=(spark or SparkOptions()).master)
        failed = -1  # not counted for remote datasets
    else:
        if data.startswith("file:"):
            from imgsearch.sources import uri_to_path

            data = uri_to_path(data)
        failed = dset.summarize(data).failed
        batches = dset.iter_embedded(data)
    with open_store(db, create=True) as store:
        written = store.upsert_batches(batches, batch_rows=s.insert_batch)
        counts = {name: store.count(name) for name in written}
    return LoadReport(written=written, failed_rows=failed, counts=counts)


@dataclass
class IndexReport:
    embed: EmbedReport
    load: LoadReport


def index(src: str, db: str, model: str, *, weights: str | None = None, out: str | None = None,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None,
          engine: str = "local", spark: SparkOptions | None = None) -> IndexReport:
    """Embed + load. Without `out` the Parquet goes to a temporary folder that is removed after loading."""
    # Open (and so lock) the database first: a busy or wrong URI fails before minutes of embedding.
    with open_store(db, create=True):
        pass
    kw = dict(weights=weights, batch_size=batch_size, workers=workers, progress=progress, engine=engine, spark=spark)
    if out is not None:
        rep = embed(src, out, model, overwrite=True, **kw)
        return IndexReport(rep, load(out, db, spark))
    if engine == "spark":
        from imgsearch.engines.spark import is_local_master

        if not is_local_master((spark or SparkOptions()).master):
            raise ImgSearchError("--out is required with a cluster master: a folder every executor can write, "
                                 "e.g. hdfs:///user/me/embeddings or s3a://bucket/embeddings")
    parent = Path(db).parent if not db.startswith(("http://", "https://", "tcp://")) else None
    with tempfile.TemporaryDirectory(prefix="imgsearch-embed-", dir=parent) as tmp:
        rep = embed(src, tmp, model, overwrite=True, **kw)
        return IndexReport(rep, load(tmp, db, spark))


@dataclass
class SearchResult:
    collection: CollectionInfo
    hits: list[Hit]


def query_vector(embedder: Embedder, image_path: str) -> np.ndarray:
    """Embed one query image file with the same decode + preprocessing as indexing."""
    if not Path(image_path).is_file():
        raise ImgSearchError(f"query image not found: {image_path}")
    uri = path_to_uri(image_path)
    outcome = decode_record(FileRecord(uri, image_id(uri), None, None), read_bytes, embedder.prep,
                            get_settings().max_pixels)
    if outcome.image is None:
        raise ImgSearchError(f"cannot use {image_path} as a query: {outcome.error}")
    return embedder.embed(outcome.image.pixels[None])


def search(image_path: str, db: str, k: int, *, model: str | None = None, weights: str | None = None) -> SearchResult:
    """Top-k most similar indexed images to an image file. The query is embedded by the collection's own model."""
    with open_store(db) as store:
        info = store.collection_for(model)
        embedder = make_embedder(info.model, weights)
        if embedder.dim != info.dim:
            raise ModelError(f"model {info.model} gives {embedder.dim}-d vectors but the collection holds {info.dim}-d")
        vec = query_vector(embedder, image_path)
        hits = store.search(info, vec, k)[0]
    return SearchResult(info, hits)


def stats(db: str) -> dict:
    with open_store(db) as store:
        infos = store.collections()
    total = sum(i.count for i in infos)
    out: dict = {"db": db, "count": total, "collections": [i.__dict__ for i in infos]}
    if len(infos) == 1:
        out["model"], out["dim"] = infos[0].model, infos[0].dim
    return out
