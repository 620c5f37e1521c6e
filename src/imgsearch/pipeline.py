"""Use cases the CLI (and later the server) call: embed, load, index, search. Plain functions over the stages."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsearch import catalog
from imgsearch import dataset as dset
from imgsearch.catalog import FolderLock
from imgsearch.config import data_dir_for, get_settings
from imgsearch.core import FileRecord, Outcome, decode_record, failure_table
from imgsearch.engines.local import EmbedReport, embed_records
from imgsearch.errors import DatasetError, ImgSearchError, ModelError, SourceError, StoreError
from imgsearch.models import Embedder, create_model, get_spec
from imgsearch.sources import (ListingReport, image_id, is_remote, list_images, looks_like_image, normalize_uri,
                               path_to_uri, read_bytes, uri_to_path)
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
          sync: bool = False, retry_failed: bool = False, batch_size: int | None = None, workers: int | None = None,
          progress: bool | None = None, engine: str = "local", spark: SparkOptions | None = None) -> EmbedReport:
    """Embed the images under `src` into the Parquet dataset at `out` with the chosen engine, incrementally.

    Only files that are new or changed since the dataset last saw them are embedded (see imgsearch.catalog); with
    `sync`, rows of files gone from the source are dropped; `overwrite` starts from an empty dataset. A run killed at
    any point is finished by running it again.
    """
    if engine not in ("local", "spark"):
        raise ImgSearchError(f"unknown engine {engine!r}: use local or spark")
    opts = spark or SparkOptions()
    if is_remote(out):  # a Hadoop URI: written afresh by Spark's committer (incremental runs need a local folder)
        if engine != "spark":
            raise ImgSearchError(f"{out}: writing to a Hadoop URI needs --engine spark")
        from imgsearch.engines.spark import embed_files_spark

        return embed_files_spark(src, out, _spark_job(model, weights, batch_size), master=opts.master,
                                 partitions=opts.partitions, conf=opts.conf, overwrite=overwrite)
    out_dir = Path(uri_to_path(normalize_uri(out)) if out.startswith("file:") else out)
    spec = get_spec(model)
    with FolderLock(out_dir):
        if overwrite:
            for f in dset.part_files(out_dir):
                f.unlink()
        state = catalog.read_state(out_dir)
        if state.models - {model}:
            raise DatasetError(f"{out} holds embeddings of {', '.join(sorted(state.models))}; a dataset holds one "
                               "model: choose another --out, or --overwrite")
        records, unreadable, unlisted, skipped, root = _list_source(src, engine, opts)
        plan = catalog.plan_run(records + [rec for rec, _ in unreadable.values()], state, root,
                                retry_failed=retry_failed, unlisted=unlisted)
        listing_failed = [r for r in plan.todo if r.id in unreadable]
        todo = [r for r in plan.todo if r.id not in unreadable]
        if listing_failed:
            dset.write_part(failure_table([Outcome(r, error=unreadable[r.id][1]) for r in listing_failed], spec.name,
                                          spec.dim), out_dir)
        if not todo:
            rep = EmbedReport(out_dir=out_dir, model=spec.name, dim=spec.dim)
        elif engine == "spark":
            from imgsearch.engines.spark import embed_files_spark

            rep = embed_files_spark(src, str(out_dir), _spark_job(model, weights, batch_size), todo=todo,
                                    master=opts.master, partitions=opts.partitions, conf=opts.conf)
        else:
            rep = embed_records(todo, out_dir, make_embedder(model, weights), batch_size=batch_size,
                                workers=workers, progress=progress)
        rep.failures = [(r.uri, unreadable[r.id][1]) for r in listing_failed] + rep.failures
        rep.failed = len(rep.failures)
        catalog.compact(out_dir, plan, sync=sync)
    rep.skipped_non_images = skipped
    rep.new, rep.changed, rep.unchanged = plan.new, plan.changed, plan.unchanged
    rep.retried, rep.failed_unchanged = plan.retried, plan.failed_unchanged
    rep.removed, rep.stale_removed = (len(plan.removed), 0) if sync else (0, len(plan.removed))
    rep.root = plan.root
    return rep


def _list_source(src: str, engine: str, opts: SparkOptions):
    """(records, {id: (record, reason)} of entries that could not be stat'ed, folders that could not be listed,
    non-images skipped, root URI)."""
    if is_remote(src):
        if engine != "spark":
            raise SourceError(f"{src}: the local engine reads local folders only; use --engine spark")
        from imgsearch.engines.spark import list_files_spark

        files = list_files_spark(src, opts.master, opts.conf)
        records = [r for r in files if looks_like_image(r.uri.rsplit("/", 1)[-1])]
        return records, {}, [], len(files) - len(records), normalize_uri(src).rstrip("/")
    listing = ListingReport()
    records = list(list_images(src, listing))
    unreadable = {image_id(uri): (FileRecord(uri, image_id(uri), None, None), reason)
                  for uri, reason in listing.unreadable or []}
    unlisted = [uri for uri, reason in listing.unreadable or [] if reason.startswith("cannot list folder")]
    root = path_to_uri(uri_to_path(normalize_uri(src)) if src.startswith("file:") else src)
    return records, unreadable, unlisted, listing.skipped_non_images, root


def _spark_job(model: str, weights: str | None, batch_size: int | None):
    from imgsearch.engines.spark import SparkJob

    s = get_settings()
    return SparkJob(model=model, weights=weights, precision=s.precision, device=s.device,
                    batch_size=batch_size or s.batch_size, max_pixels=s.max_pixels, threads=1)


@dataclass
class LoadReport:
    written: dict[str, int]
    failed_rows: int
    counts: dict[str, int]
    deleted: int = 0


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
    embeddings: str = ""  # where the Parquet dataset (the record of what is indexed) lives


def embeddings_root_for(db: str) -> Path:
    """The folder holding the Parquet datasets `index` keeps beside a database, one per model."""
    name = Path(db).stem if not is_server_uri(db) else re.sub(r"[^0-9A-Za-z.-]+", "_", db.split("://", 1)[-1])
    return data_dir_for(db) / f"{name}.embeddings"


def embeddings_dir_for(db: str, model: str) -> Path:
    """The Parquet dataset `index` keeps beside a database: what makes reruns incremental and Milvus repairable."""
    return embeddings_root_for(db) / model


def index(src: str, db: str, model: str, *, weights: str | None = None, out: str | None = None,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None,
          engine: str = "local", spark: SparkOptions | None = None, reduce_target: str | None = None,
          whiten: bool = False, sync: bool = False, retry_failed: bool = False,
          overwrite: bool = False) -> IndexReport:
    """Embed what is new or changed under `src` into the database's embeddings dataset, then bring Milvus in line
    with it (upsert what it lacks or holds stale, delete failed files and, with `sync`, files gone from `src`).

    Run it again at any time, after any crash: it finishes what is missing and never duplicates. With `reduce_target`
    the PCA is fitted on the whole dataset and its collection rebuilt. `out` keeps the dataset in a folder of your
    choice (a Hadoop URI there means a full Spark run, loaded afterwards).
    """
    # Open (and so lock) the database first: a busy or wrong URI fails before minutes of embedding.
    with open_store(db, create=True):
        pass
    variance = dims = None
    if reduce_target is not None:
        from imgsearch.reduce import parse_target

        variance, dims = parse_target(reduce_target)
    kw = dict(weights=weights, batch_size=batch_size, workers=workers, progress=progress, engine=engine, spark=spark)
    emb_dir = out or str(embeddings_dir_for(db, model))
    if is_remote(emb_dir):
        rep = embed(src, emb_dir, model, overwrite=True, **kw)
        return IndexReport(rep, load(emb_dir, db, spark), embeddings=emb_dir)
    rep = embed(src, emb_dir, model, overwrite=overwrite, sync=sync, retry_failed=retry_failed, **kw)
    if reduce_target is None:
        return IndexReport(rep, sync_store(emb_dir, db, model, rep, sync=sync, force=overwrite), embeddings=emb_dir)
    parent = None if is_server_uri(db) else Path(db).parent
    with tempfile.TemporaryDirectory(prefix="imgsearch-reduce-", dir=parent) as tmp:
        red_dir = (emb_dir.rstrip("/") + "-reduced") if out else str(Path(tmp) / "reduced")
        reduced = reduce(emb_dir, red_dir, variance=variance, dims=dims, whiten=whiten,
                         engine="spark" if engine == "spark" else "local", spark=spark, overwrite=True)
        return IndexReport(rep, load(red_dir, db, spark), reduced, embeddings=emb_dir)


def sync_store(data_dir: str, db: str, model: str, rep: EmbedReport | None = None, *, sync: bool = False,
               force: bool = False) -> LoadReport:
    """Make the model's collection match the embeddings dataset for the files under the indexed source: upsert rows
    Milvus lacks or holds in another version (size/mtime differ), delete ids whose file now fails to decode and, with
    `sync`, ids under the source that the dataset no longer holds. Every step is idempotent, so a crash anywhere is
    repaired by the next run. Rows of other sources are left to the runs that index them (a dataset kept for a server
    URI must not pour another source's images into whatever server now answers there)."""
    root = getattr(rep, "root", None) or None
    current = catalog.read_state(data_dir).current(root)
    spec = get_spec(model)
    with open_store(db, create=True) as store:
        name = store.ensure_collection(spec.name, spec.dim)
        have = store.file_keys(name)  # id -> (path, bytes, mtime_us)
        stale = {fid for fid, (key, failed) in current.items()
                 if not failed and (force or fid not in have or catalog.file_key(*have[fid][1:]) != key)}
        drop = [fid for fid in have if fid in current and current[fid][1]]
        if sync and root:
            drop += [fid for fid, (path, *_) in have.items() if fid not in current and catalog.under(path, root)]
        written: dict[str, int] = {}
        if stale:
            batches = dset.iter_embedded(data_dir, ids=stale)
            written = store.upsert_batches(batches, batch_rows=get_settings().insert_batch)
        store.delete(name, drop)
        counts = {name: store.count(name)}
    return LoadReport(written=written or {name: 0}, failed_rows=sum(1 for _, f in current.values() if f),
                      counts=counts, deleted=len(drop))


def failures(db: str, *, data: str | None = None, model: str | None = None) -> list[dict]:
    """Failed files with their reasons, from an embeddings folder or from those `index` keeps for the database."""
    if data is not None:
        folders = [Path(data)]
    else:
        base = embeddings_root_for(db)
        folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if not folders:
            raise DatasetError(f"no embeddings recorded for {db} (looked in {base}); run 'imgsearch index' first, "
                               "or pass --data with the folder given to 'embed --out'")
    rows = []
    for folder in folders:
        if model is not None and folder.name != model and data is None:
            continue
        for r in dset.read_failures(folder) if dset.has_data(folder) else []:
            rows.append({"path": r["path"], "error": r["error"], "id": r["id"], "model": r["model"]})
    return sorted(rows, key=lambda r: r["path"])


def duplicates(db: str, *, threshold: float | None = None, model: str | None = None,
               collection: str | None = None) -> dict:
    """Near-duplicate groups among the indexed images (see imgsearch.duplicates)."""
    from imgsearch.duplicates import DEFAULT_THRESHOLD, find_groups

    t = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0 < t <= 1:
        raise ImgSearchError(f"--threshold is a cosine similarity in (0, 1], got {t}")
    keep = ["id", "path", "width", "height", "bytes"]
    with open_store(db) as store:
        info = store.collection_for(model, collection)
        cols, vectors = collection_vectors(store, db, info, keep)
    groups = find_groups(vectors, t, pixels=[(w or 0) * (h or 0) for w, h in zip(cols["width"], cols["height"])])
    return {"collection": info.name, "images": len(vectors), "threshold": t,
            "groups": [{"size": len(g.members), "min_similarity": g.min_link,
                        "images": [{k: cols[k][i] for k in keep} for i in g.members]} for g in groups]}


def collection_vectors(store, db: str, info: CollectionInfo, columns: list[str], data: str | None = None
                       ) -> tuple[dict[str, list], np.ndarray]:
    """Every vector of a collection with some columns, for whole-collection work (duplicates, exact search).

    Read from the embeddings dataset when it holds exactly the collection's rows (`data`, or the one `index` keeps
    beside the database): fast. Otherwise pulled out of Milvus, which is slow for big collections."""
    folder = Path(data) if data else embeddings_dir_for(db, info.model)
    if not info.reducer and dset.has_data(folder):
        cols: dict[str, list] = {c: [] for c in columns}
        vecs = []
        for b in dset.iter_embedded(folder, columns=tuple(dict.fromkeys([*columns, "id", "vector", "model"]))):
            if b.num_rows and b.column("model")[0].as_py() != info.model:
                break
            for c in columns:
                cols[c] += b.column(c).to_pylist()
            vecs.append(dset.vectors_of(b))
        else:
            x = np.concatenate(vecs) if vecs else np.zeros((0, info.dim), np.float32)
            if len(x) == info.count and x.shape[1] == info.dim and len(set(cols.get("id") or [])) in (0, len(x)):
                return cols, x
    cols = {c: [] for c in columns}
    vecs = []
    for batch in store.rows(info.name, [c for c in columns if c != "id"] + ["vector"]):
        for r in batch:
            for c in columns:
                cols[c].append(r[c])
            vecs.append(r["vector"])
    return cols, np.asarray(vecs, np.float32).reshape(len(vecs), info.dim)


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
        hits = store.search(info, vec, k, consistency="Strong")[0]  # a one-off query sees every finished write
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
