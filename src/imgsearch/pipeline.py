"""Use cases the CLI (and later the server) call: embed, load, index, search. Plain functions over the stages."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsearch import dataset as dset
from imgsearch.config import data_dir_for, get_settings
from imgsearch.core import FileRecord, decode_record
from imgsearch.engines.local import EmbedReport, embed_source
from imgsearch.errors import DatasetError, ImgSearchError, ModelError, StoreError
from imgsearch.models import Embedder, create_model
from imgsearch.sources import image_id, path_to_uri, read_bytes
from imgsearch.store import CollectionInfo, Hit, is_server_uri, open_store


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


REDUCER_SUBDIR = "_reducer"  # inside a reduced dataset; '_' keeps it out of the Parquet readers


def reducers_dir(db: str) -> Path:
    return data_dir_for(db) / "reducers"


def load_reducer(db: str, info: CollectionInfo):
    """The PCA reducer a collection's vectors went through, from the reducers folder beside the database."""
    from imgsearch.reduce import Reducer, ReduceError

    folder = reducers_dir(db) / str(info.reducer)
    if not (folder / "reducer.json").is_file():
        raise StoreError(f"collection {info.name} was reduced with PCA reducer {info.reducer}, which is not in "
                         f"{folder}: copy the {REDUCER_SUBDIR} folder of the reduced embeddings there")
    red = Reducer.load(folder)
    if red.model != info.model or red.k != info.dim or red.id != info.reducer:
        raise ReduceError(f"reducer in {folder} ({red.model}, {red.input_dim}->{red.k}) does not match collection "
                          f"{info.name} ({info.model}, {info.dim}-d)")
    return red


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
    reducer_id = None
    reducer_src = Path(data) / REDUCER_SUBDIR if not remote else None
    if reducer_src is not None and (reducer_src / "reducer.json").is_file():
        from imgsearch.reduce import Reducer

        red = Reducer.load(reducer_src)  # checks its integrity
        reducer_id = red.id
        red.save(reducers_dir(db) / red.id)
    with open_store(db, create=True) as store:
        written = store.upsert_batches(batches, batch_rows=s.insert_batch, reducer=reducer_id)
        counts = {name: store.count(name) for name in written}
    return LoadReport(written=written, failed_rows=failed, counts=counts)


@dataclass
class IndexReport:
    embed: EmbedReport
    load: LoadReport
    reduce: "ReduceReport | None" = None


def index(src: str, db: str, model: str, *, weights: str | None = None, out: str | None = None,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None,
          engine: str = "local", spark: SparkOptions | None = None, reduce_target: str | None = None,
          whiten: bool = False) -> IndexReport:
    """Embed (+ reduce with PCA) + load. Without `out` the Parquet goes to a temporary folder removed after loading."""
    # Open (and so lock) the database first: a busy or wrong URI fails before minutes of embedding.
    with open_store(db, create=True):
        pass
    variance = dims = None
    if reduce_target is not None:
        from imgsearch.reduce import parse_target

        variance, dims = parse_target(reduce_target)
    kw = dict(weights=weights, batch_size=batch_size, workers=workers, progress=progress, engine=engine, spark=spark)
    if out is None and engine == "spark":
        from imgsearch.engines.spark import is_local_master

        if not is_local_master((spark or SparkOptions()).master):
            raise ImgSearchError("--out is required with a cluster master: a folder every executor can write, "
                                 "e.g. hdfs:///user/me/embeddings or s3a://bucket/embeddings")
    parent = None if is_server_uri(db) else Path(db).parent
    with tempfile.TemporaryDirectory(prefix="imgsearch-embed-", dir=parent) as tmp:
        emb_dir = out or str(Path(tmp) / "embeddings")
        rep = embed(src, emb_dir, model, overwrite=True, **kw)
        to_load, reduced = emb_dir, None
        if reduce_target is not None:
            red_dir = (emb_dir.rstrip("/") + "-reduced") if out else str(Path(tmp) / "reduced")
            reduced = reduce(emb_dir, red_dir, variance=variance, dims=dims, whiten=whiten,
                             engine="spark" if engine == "spark" else "local", spark=spark, overwrite=True)
            to_load = red_dir
        return IndexReport(rep, load(to_load, db, spark), reduced)


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


def search(image_path: str, db: str, k: int, *, model: str | None = None, weights: str | None = None,
           collection: str | None = None) -> SearchResult:
    """Top-k most similar indexed images to an image file. The query is embedded by the collection's own model
    (and reduced by its PCA reducer, if it has one)."""
    with open_store(db) as store:
        info = store.collection_for(model, collection)
        reducer = load_reducer(db, info) if info.reducer else None
        embedder = make_embedder(info.model, weights)
        expected = reducer.input_dim if reducer else info.dim
        if embedder.dim != expected:
            raise ModelError(f"model {info.model} gives {embedder.dim}-d vectors but the collection holds {info.dim}-d")
        vec = query_vector(embedder, image_path)
        if reducer is not None:
            vec = reducer.transform(vec)
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


@dataclass
class ReduceReport:
    out: str
    reducer: object  # imgsearch.reduce.Reducer
    rows: int
    plot: Path
    seconds: float


def reduce(data_dir: str, out: str, *, variance: float | None = None, dims: int | None = None, whiten: bool = False,
           engine: str = "local", spark: SparkOptions | None = None, overwrite: bool = False,
           quality_sample: int = 20_000) -> ReduceReport:
    """Fit PCA on a dataset's vectors, write the reduced dataset to `out` with the reducer (and its plot and recall
    report) in out/_reducer."""
    import time

    import pyarrow as pa

    from imgsearch.reduce import ReduceError, Reducer, fit_batches, fit_from_moments, plot, recall_at_k, reduce_table

    started = time.perf_counter()
    summary = dset.summarize(data_dir)
    if len(summary.models) != 1:
        raise ReduceError(f"{data_dir} holds vectors of {len(summary.models)} models ({summary.models}); need one")
    (model, dim), = summary.models.items()
    if summary.embedded < 2:
        raise ReduceError(f"{data_dir} has {summary.embedded} vectors; PCA needs more")
    if dset.has_data(out) and not overwrite:
        raise DatasetError(f"{out} already holds embeddings; choose another --out or pass --overwrite")
    if engine == "spark":
        from imgsearch.engines.spark import fit_moments_spark
        from imgsearch.reduce import MAX_COVARIANCE_DIM

        if dim > MAX_COVARIANCE_DIM:
            raise ReduceError(f"{dim}-d vectors are too wide for the distributed covariance fit (max "
                              f"{MAX_COVARIANCE_DIM}); use --engine local, which switches to randomized PCA")
        reducer = fit_from_moments(fit_moments_spark(data_dir, (spark or SparkOptions()).master), model,
                                   variance, dims, whiten)
    elif engine == "local":
        reducer = fit_batches((dset.vectors_of(b) for b in dset.iter_embedded(data_dir, columns=("vector",))),
                              model, variance, dims, whiten)
    else:
        raise ImgSearchError(f"unknown engine {engine!r}: use local or spark")

    # quality: neighbours in the reduced space vs exact neighbours in the full space, on a sample
    sample, sampled = [], 0
    for b in dset.iter_embedded(data_dir, columns=("vector",)):
        sample.append(dset.vectors_of(b))
        sampled += b.num_rows
        if sampled >= quality_sample:
            break
    full = np.concatenate(sample)[:quality_sample]
    reducer.quality = {"recall_at_10": round(recall_at_k(full, reducer.transform(full), k=10), 4),
                       "sample": len(full)}

    if dset.has_data(out):
        for f in dset.part_files(out):
            f.unlink()
    rows = buffered_rows = 0
    buffered: list = []
    rows_per_part = get_settings().rows_per_part
    for b in dset.iter_embedded(data_dir, columns=tuple(dset.SCHEMA.names)):
        buffered.append(reduce_table(pa.Table.from_batches([b]), reducer))
        rows += b.num_rows
        buffered_rows += b.num_rows
        if buffered_rows >= rows_per_part:
            dset.write_part(pa.concat_tables(buffered), out)
            buffered, buffered_rows = [], 0
    if buffered:
        dset.write_part(pa.concat_tables(buffered), out)
    folder = reducer.save(Path(out) / REDUCER_SUBDIR)
    png = plot(reducer, folder / "explained_variance.png")
    Reducer.load(folder)  # verify what was written
    return ReduceReport(out=out, reducer=reducer, rows=rows, plot=png, seconds=time.perf_counter() - started)
