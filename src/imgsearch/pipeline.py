"""Use cases the CLI and the server call: embed, index, load, reduce, search, stats, failures, duplicates.

Plain functions over the stages. Each takes the Settings its edge built and an engine *name*; the engine is created
from the registry and held as a context manager for the whole use case, so nothing here knows which engine runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from imgsearch import catalog
from imgsearch import dataset as dset
from imgsearch.catalog import FolderLock
from imgsearch.config import Settings
from imgsearch.core import Outcome, failure_table
from imgsearch.engines import Engine, EngineOptions, create_engine, engine_for
from imgsearch.errors import DatasetError, ImgSearchError
from imgsearch.jobs import EmbedJob, EmbedReport, buckets_of
from imgsearch.layout import (REDUCER_SUBDIR, embeddings_dir_for, embeddings_root_for, is_server_uri, reducers_dir,
                              runs_log_for)
from imgsearch.models import get_spec
from imgsearch.query import QueryEncoder, check_text, match_tags
from imgsearch.reduce import MAX_COVARIANCE_DIM, ReduceError, Reducer, fit_from_moments, fit_wide, recall_at_k
from imgsearch.sources import is_remote, read_by_workers
from imgsearch.progress import progress as show_progress
from imgsearch.filters import Filters
from imgsearch.store import CURRENT_FIELDS, CollectionInfo, CollectionRows, Hit, open_store


def embed(src: str, out: str, model: str, settings: Settings, *, weights: str | None = None,
          overwrite: bool = False, sync: bool = False, retry_failed: bool = False, batch_size: int | None = None,
          workers: int | None = None, progress: bool | None = None, engine: str = "local",
          options: EngineOptions | None = None) -> EmbedReport:
    """Embed the images under `src` into the Parquet dataset at `out` with the chosen engine, incrementally.

    Only files that are new or changed since the dataset last saw them are embedded (see imgsearch.catalog); with
    `sync`, rows of files gone from the source are dropped; `overwrite` starts from an empty dataset. A run killed at
    any point is finished by running it again.
    """
    job = EmbedJob.from_settings(settings, model, weights=weights, batch_size=batch_size, workers=workers,
                                 progress=progress)
    with create_engine(engine, settings, options) as eng:
        return embed_with(eng, src, out, job, overwrite=overwrite, sync=sync, retry_failed=retry_failed)


def embed_with(eng: Engine, src: str, out: str, job: EmbedJob, *, overwrite: bool = False, sync: bool = False,
               retry_failed: bool = False) -> EmbedReport:
    """`embed` with an engine the caller holds (index runs embed, reduce and load on one engine)."""
    spec = get_spec(job.model)
    if hadoop_dataset(out):  # a Hadoop URI: no catalog there, so the whole source is written afresh
        if not eng.can_read(out):
            raise ImgSearchError(f"{out}: writing to a Hadoop URI needs --engine spark")
        listing = eng.list(src)
        rep = eng.embed(src, listing.records, out, job, mode="replace" if overwrite else "new")
        rep.skipped_non_images, rep.new, rep.root = listing.skipped_non_images, len(listing.records), listing.root
        return rep
    out_dir = dset.locate(out, job.buckets)  # a local folder or a bucket prefix (s3://, gs://, az://)
    if not out_dir.is_local and eng.distributed:
        raise ImgSearchError(f"{out}: the Spark engine writes datasets through Hadoop (hdfs://, s3a:// with "
                             "--overwrite); keep an incremental dataset in a bucket with the local engine")
    with FolderLock(out_dir):
        dset.prepare(out_dir, "replace" if overwrite else "append")
        state = catalog.read_state(out_dir)
        if state.models - {spec.name}:
            raise DatasetError(f"{out} holds embeddings of {', '.join(sorted(state.models))}; a dataset holds one "
                               "model: choose another --out, or --overwrite")
        listing = eng.list(src)
        unreadable = listing.unreadable
        plan = catalog.plan_run(listing.records + [rec for rec, _ in unreadable.values()], state, listing.root,
                                retry_failed=retry_failed, unlisted=listing.unlisted)
        listing_failed = [r for r in plan.todo if r.id in unreadable]
        todo = [r for r in plan.todo if r.id not in unreadable]
        if listing_failed:
            dset.write_part(failure_table([Outcome(r, error=unreadable[r.id][1]) for r in listing_failed], spec.name,
                                          spec.dim), out_dir)
        rep = eng.embed(src, todo, out_dir.uri, job) if todo else EmbedReport(out_dir=out_dir.report_name,
                                                                             model=spec.name, dim=spec.dim)
        rep.failures = [(r.uri, unreadable[r.id][1]) for r in listing_failed] + rep.failures
        rep.failed = len(rep.failures)
        catalog.compact(out_dir, plan, sync=sync)
    rep.skipped_non_images = listing.skipped_non_images
    rep.new, rep.changed, rep.unchanged = plan.new, plan.changed, plan.unchanged
    rep.retried, rep.failed_unchanged = plan.retried, plan.failed_unchanged
    rep.removed, rep.stale_removed = (len(plan.removed), 0) if sync else (0, len(plan.removed))
    rep.root = plan.root
    return rep


@dataclass
class LoadReport:
    written: dict[str, int]
    failed_rows: int
    counts: dict[str, int]
    deleted: int = 0


def load(data_dir: str | os.PathLike[str], db: str, settings: Settings, *, engine: str = "local",
         options: EngineOptions | None = None) -> LoadReport:
    """Upsert a dataset's vectors into Milvus, in batches from this process. A dataset the chosen engine cannot read
    (hdfs://, s3a://, ... for the local engine) is streamed by one that can (Spark)."""
    data = os.fspath(data_dir)
    with engine_for(data, engine, settings, options) as eng:
        return load_with(eng, data, db, settings)


def hadoop_dataset(uri: str) -> bool:
    """A dataset only Hadoop's file systems reach (hdfs://, s3a://, ...): written whole by Spark, streamed by Spark.
    Local folders and s3://, gs:// or az:// prefixes are read and appended to by this process (pyarrow's file
    systems)."""
    return is_remote(uri) and not read_by_workers(uri)


def load_with(eng: Engine, data: str, db: str, settings: Settings) -> LoadReport:
    local = None if hadoop_dataset(data) else dset.locate(data, buckets_of(settings))
    summary = dset.summarize(local) if local else None
    failed = summary.failed if summary else -1  # not counted for Hadoop datasets
    reducer_id = None
    reducer_src = Path(local.path) / REDUCER_SUBDIR if local and local.is_local else None
    if reducer_src is not None and (reducer_src / "reducer.json").is_file():
        red = Reducer.load(reducer_src)  # checks its integrity
        reducer_id = red.id
        red.save(reducers_dir(db, settings) / red.id)
    with open_store(db, settings, create=True) as store:
        batches = dset.iter_embedded(local) if local else eng.stream_rows(data)  # local files: read them here
        with show_progress(summary.embedded if summary else 0, "loading into Milvus") as advance:
            written = store.upsert_batches(batches, batch_rows=settings.insert_batch, reducer=reducer_id,
                                           insert=None, advance=advance)
        counts = {name: store.count(name) for name in written}
    return LoadReport(written=written, failed_rows=failed, counts=counts)


@dataclass
class IndexReport:
    embed: EmbedReport
    load: LoadReport
    reduce: "ReduceReport | None" = None
    embeddings: str = ""  # where the Parquet dataset (the record of what is indexed) lives


def index(src: str, db: str, model: str, settings: Settings, *, weights: str | None = None, out: str | None = None,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None,
          engine: str = "local", options: EngineOptions | None = None, reduce_target: str | None = None,
          whiten: bool = False, sync: bool = False, retry_failed: bool = False,
          overwrite: bool = False) -> IndexReport:
    """Embed what is new or changed under `src` into the database's embeddings dataset, then bring Milvus in line
    with it (upsert what it lacks or holds stale, delete failed files and, with `sync`, files gone from `src`).

    Run it again at any time, after any crash: it finishes what is missing and never duplicates. With `reduce_target`
    the PCA is fitted on the whole dataset and its collection rebuilt. `out` keeps the dataset in a folder of your
    choice (a Hadoop URI there means a full Spark run, loaded afterwards).
    """
    # Open (and so lock) the database first: a busy or wrong URI fails before minutes of embedding.
    with open_store(db, settings, create=True):
        pass
    variance = dims = None
    if reduce_target is not None:
        from imgsearch.reduce import parse_target

        variance, dims = parse_target(reduce_target)
    started = time.time()
    rep = _index(src, db, model, settings, weights=weights, out=out, batch_size=batch_size, workers=workers,
                 progress=progress, engine=engine, options=options, variance=variance, dims=dims, whiten=whiten,
                 sync=sync, retry_failed=retry_failed, overwrite=overwrite)
    log_run(db, settings, src, engine, rep, started)
    return rep


def log_run(db: str, settings: Settings, src: str, engine: str, rep: IndexReport, started: float) -> None:
    """Append the run's summary to the database's runs log (the status view's "last indexing run")."""
    import json
    from datetime import datetime, timezone

    e = rep.embed
    line = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "source": src, "engine": engine,
            "model": e.model, "new": e.new, "changed": e.changed, "unchanged": e.unchanged, "embedded": e.embedded,
            "failed": e.failed + e.failed_unchanged, "removed": e.removed, "loaded": sum(rep.load.written.values()),
            "count": sum(rep.load.counts.values()), "seconds": round(time.time() - started, 1),
            "embeddings": rep.embeddings}
    path = runs_log_for(db, settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
    except OSError:  # a read-only data dir must not fail a finished run
        pass


def last_run(db: str, settings: Settings) -> dict | None:
    import json

    path = runs_log_for(db, settings)
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return None
    return json.loads(lines[-1]) if lines else None


def _index(src: str, db: str, model: str, settings: Settings, *, weights, out, batch_size, workers, progress, engine,
           options, variance, dims, whiten, sync, retry_failed, overwrite) -> IndexReport:
    job = EmbedJob.from_settings(settings, model, weights=weights, batch_size=batch_size, workers=workers,
                                 progress=progress)
    emb_dir = out or str(embeddings_dir_for(db, model, settings))
    with create_engine(engine, settings, options) as eng:
        if hadoop_dataset(emb_dir):
            rep = embed_with(eng, src, emb_dir, job, overwrite=True)
            return IndexReport(rep, load_with(eng, emb_dir, db, settings), embeddings=emb_dir)
        rep = embed_with(eng, src, emb_dir, job, overwrite=overwrite, sync=sync, retry_failed=retry_failed)
        if variance is None and dims is None:
            return IndexReport(rep, sync_store(emb_dir, db, model, settings, rep, sync=sync, force=overwrite),
                               embeddings=emb_dir)
        parent = None if is_server_uri(db) else Path(db).parent
        with tempfile.TemporaryDirectory(prefix="imgsearch-reduce-", dir=parent) as tmp:
            kept = out and not is_remote(out)  # the reduced copy is kept beside a local --out folder
            red_dir = (emb_dir.rstrip("/") + "-reduced") if kept else str(Path(tmp) / "reduced")
            reduced = reduce_with(eng, emb_dir, red_dir, settings, variance=variance, dims=dims, whiten=whiten,
                                  overwrite=True)
            return IndexReport(rep, load_with(eng, red_dir, db, settings), reduced, embeddings=emb_dir)


def sync_store(data_dir: str, db: str, model: str, settings: Settings, rep: EmbedReport | None = None, *,
               sync: bool = False, force: bool = False) -> LoadReport:
    """Make the model's collection match the embeddings dataset for the files under the indexed source: upsert rows
    Milvus lacks or holds in another version (size/mtime differ), delete ids whose file now fails to decode and, with
    `sync`, ids under the source that the dataset no longer holds. Every step is idempotent, so a crash anywhere is
    repaired by the next run. Rows of other sources are left to the runs that index them (a dataset kept for a server
    URI must not pour another source's images into whatever server now answers there)."""
    root = getattr(rep, "root", None) or None
    data_dir = dset.locate(data_dir, buckets_of(settings))
    current = catalog.read_state(data_dir).current(root)
    spec = get_spec(model)
    with open_store(db, settings, create=True) as store:
        name = store.ensure_collection(spec.name, spec.dim)
        if force and not store.fields(name) >= CURRENT_FIELDS:  # made before tags: rebuilt with today's schema
            store.drop(name)
            name = store.ensure_collection(spec.name, spec.dim)
        have = store.file_keys(name)  # id -> (path, bytes, mtime_us)
        stale = {fid for fid, (key, failed) in current.items()
                 if not failed and (force or fid not in have or catalog.file_key(*have[fid][1:]) != key)}
        drop = [fid for fid in have if fid in current and current[fid][1]]
        if sync and root:
            drop += [fid for fid, (path, *_) in have.items() if fid not in current and catalog.under(path, root)]
        written: dict[str, int] = {}
        missing = {fid for fid in stale if fid not in have}
        with show_progress(len(stale), "loading into Milvus") as advance:
            for ids, insert in ((missing, True), (stale - missing, False)):
                if ids:  # rows Milvus lacks: a plain insert (no duplicate can arise: `have` listed every id)
                    got = store.upsert_batches(dset.iter_embedded(data_dir, ids=ids), batch_rows=settings.insert_batch,
                                               insert=insert, advance=advance)
                    for name_, k in got.items():
                        written[name_] = written.get(name_, 0) + k
        store.delete(name, drop)
        counts = {name: store.count(name)}
    return LoadReport(written=written or {name: 0}, failed_rows=sum(1 for _, f in current.values() if f),
                      counts=counts, deleted=len(drop))


def failures(db: str, settings: Settings, *, data: str | None = None, model: str | None = None) -> list[dict]:
    """Failed files with their reasons, from an embeddings folder or from those `index` keeps for the database."""
    if data is not None:
        folders = [dset.locate(data, buckets_of(settings))]
    else:
        base = embeddings_root_for(db, settings)
        folders = [dset.locate(p) for p in sorted(base.iterdir()) if p.is_dir() and (model is None or p.name == model)
                   ] if base.is_dir() else []
        kept = (last_run(db, settings) or {}).get("embeddings") or ""
        if kept and is_remote(kept) and not hadoop_dataset(kept):  # the last `index --out` kept it in a bucket
            folders.append(dset.locate(kept, buckets_of(settings)))
        if not folders:
            raise DatasetError(f"no embeddings recorded for {db} (looked in {base}); run 'imgsearch index' first, "
                               "or pass --data with the folder given to 'embed --out'")
    rows = []
    for folder in folders:
        for r in dset.read_failures(folder) if dset.has_data(folder) else []:
            rows.append({"path": r["path"], "error": r["error"], "id": r["id"], "model": r["model"]})
    return sorted(rows, key=lambda r: r["path"])


def duplicates(db: str, settings: Settings, *, threshold: float | None = None, model: str | None = None,
               collection: str | None = None, method: str = "auto", progress: bool | None = None,
               verify: bool = True) -> dict:
    """Near-duplicate groups among the indexed images. `verify` (the default): the embeddings give each image its
    most similar candidates (`threshold`: their cosine floor), the pixels decide (imgsearch.samepicture), and every
    member of a group is verified against its largest image (see `verified_duplicate_groups`). Without: groups of
    images linked at cosine >= threshold (union-find; look-alikes chain into large groups). `method`: exact (every
    pair), ann (IVF, recall measured on a sample) or auto (exact up to duplicates_exact_max)."""
    with open_store(db, settings) as store:
        info = store.collection_for(model, collection)
        found = duplicate_links(store, info, db, settings, threshold=threshold, method=method, progress=progress,
                                candidates=settings.duplicates_candidates if verify else None)
    if not verify:
        return duplicate_groups(found, threshold=found["threshold"])
    return verified_duplicate_groups(found, settings, progress)


def duplicate_links(store, info: CollectionInfo, db: str, settings: Settings, *, threshold: float | None = None,
                    method: str = "auto", progress: bool | None = None, candidates: int | None = None) -> dict:
    """Every pair of the collection's images linked at cosine >= threshold, with the rows' small columns: what
    `duplicate_groups` turns into groups at this or any higher threshold (the service computes links once).
    With `candidates`: only each image's `candidates` most similar at >= threshold (default: the candidates' floor),
    for verification."""
    from imgsearch.duplicates import DEFAULT_THRESHOLD, cap_links, find_links_ann, find_links_exact, top_links

    t = threshold if threshold is not None else (
        settings.duplicates_candidate_floor if candidates else DEFAULT_THRESHOLD)
    if not 0 < t <= 1:
        raise ImgSearchError(f"--threshold is a cosine similarity in (0, 1], got {t}")
    if method not in ("auto", "exact", "ann"):
        raise ImgSearchError(f"--method is auto, exact or ann, got {method!r}")
    started = time.perf_counter()
    keep = ["id", "path", "width", "height", "bytes", "mtime_us"]
    rows = CollectionRows(store, info, keep, embeddings_dir_for(db, info.model, settings))
    use_ann = method == "ann" or (method == "auto" and len(rows) > settings.duplicates_exact_max)
    if use_ann:
        cols: dict[str, list] = {c: [] for c in keep}

        def vectors():  # the one read of the collection: small columns kept, vectors handed to the search
            for got, x in rows:
                for c in keep:
                    cols[c] += got[c]
                yield x

        with show_progress(2 * len(rows), "duplicates (ANN: stream, search)", progress) as advance:
            links = find_links_ann(vectors, len(rows), info.dim, t, nprobe=settings.duplicates_nprobe,
                                   advance=advance)
        if candidates:
            links = cap_links(links, len(rows), candidates)
    else:
        cols, vectors = rows.materialise()
        links = top_links(vectors, candidates, t) if candidates else find_links_exact(vectors, t)
        del vectors
    return {"collection": info.name, "threshold": t, "links": links, "cols": cols, "source": rows.source,
            "seconds": round(time.perf_counter() - started, 2)}


def verified_duplicate_groups(found: dict, settings: Settings, progress: bool | None = None) -> dict:
    """Groups of the same picture: identical files (same size and content hash) and copies verified from the pixels
    against the group's representative (its largest image). A file that cannot be read now is skipped with its
    reason; the keep proposal is the largest image (pixels), then the largest file, then the oldest (a copy is made
    after its original)."""
    from concurrent.futures import ThreadPoolExecutor

    from imgsearch.duplicates import Links, verified_groups
    from imgsearch.samepicture import Sketches, Verdict
    from imgsearch.sources import read_bytes

    started = time.perf_counter()
    links, cols = found["links"], found["cols"]
    n = len(cols["id"])
    buckets = buckets_of(settings)

    def read(uri: str) -> bytes:
        return read_bytes(uri, settings.max_file_bytes, buckets)

    digests = _content_digests(cols, read)
    same_content: dict[str, list[int]] = {}
    for row, digest in digests.items():
        same_content.setdefault(digest, []).append(row)
    extra = [(g[0], o) for g in same_content.values() for o in g[1:]]  # identical files are always candidates
    if extra:
        a, b = np.array([min(p) for p in extra]), np.array([max(p) for p in extra])
        links = Links(np.concatenate([links.i, a]), np.concatenate([links.j, b]),
                      np.concatenate([links.score, np.ones(len(a), np.float32)]), links.method, links.stats)
    sketches = Sketches(cols["path"], read, settings.max_pixels)
    verdicts: dict[tuple[int, int], Verdict | None] = {}

    def verify(i: int, j: int) -> Verdict | None:
        key = (min(i, j), max(i, j))
        if key not in verdicts:
            if digests.get(i) is not None and digests.get(i) == digests.get(j):
                verdicts[key] = Verdict(True, ["identical"], 1.0, 1.0, 0.0, "identical files")
            else:
                verdicts[key] = sketches.verify(i, j)
        return verdicts[key]

    pairs = list(zip(links.i.tolist(), links.j.tolist()))
    t0 = time.perf_counter()
    with show_progress(len(pairs), "duplicates (verifying candidates)", progress) as advance, \
            ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for _ in pool.map(lambda p: verify(*p), pairs, chunksize=64):  # cv2 and Pillow release the GIL
            advance(1)
    pixels = _pixels(cols)
    groups, _ = verified_groups(links, verify, pixels, same=lambda v: v.same)
    verify_s = time.perf_counter() - t0
    out_groups = []
    for g in groups:
        rep = g.members[0]
        images = []
        for m in g.members:
            v = g.relation.get(m)
            images.append({**{k: cols[k][m] for k in cols},
                           "relation": "representative" if v is None else ("identical" if v.edits == ["identical"]
                                                                          else "copy"),
                           **({"evidence": v.evidence()} if v is not None else {})})
        kind = "identical" if all(im["relation"] != "copy" for im in images) else "edited"
        keep = max(g.members, key=lambda m: (pixels[m], cols["bytes"][m] or 0, -(cols["mtime_us"][m] or 0)))
        out_groups.append({"size": len(g.members), "kind": kind, "keep": cols["path"][keep],
                           "keep_id": cols["id"][keep], "representative": cols["path"][rep], "images": images})
    skipped = [{"path": cols["path"][r], "reason": why} for r, why in sorted(sketches.failed.items())]
    return {"collection": found["collection"], "images": n, "method": links.method, "verified": True,
            "candidate_floor": found["threshold"], "candidates": len(pairs), "verifications": len(verdicts),
            "verify_ms_per_pair": round(1000 * verify_s / max(len(verdicts), 1), 2), "search": links.stats,
            "source": found["source"], "seconds": round(found["seconds"] + time.perf_counter() - started, 2),
            "skipped": skipped, "groups": out_groups}


def _pixels(cols: dict[str, list]) -> list[int]:
    """Each row's pixel count (0 where unknown): what picks a group's representative."""
    return [(w or 0) * (h or 0) for w, h in zip(cols["width"], cols["height"])]


def _content_digests(cols: dict[str, list], read) -> dict[int, str]:
    """Row -> BLAKE2b of the file's bytes, for the rows that share their file size with another (only those can be
    identical; a file that cannot be read is left out here and reported by verification)."""
    import hashlib

    by_size: dict[int, list[int]] = {}
    for row, size in enumerate(cols["bytes"]):
        if size:
            by_size.setdefault(size, []).append(row)
    out = {}
    for rows in by_size.values():
        if len(rows) < 2:
            continue
        for row in rows:
            try:
                out[row] = hashlib.blake2b(read(cols["path"][row]), digest_size=16).hexdigest()
            except OSError:
                continue
    return out


def duplicate_groups(found: dict, threshold: float) -> dict:
    """Groups of images linked at >= threshold (not below the threshold the links were found at), largest first."""
    from imgsearch.duplicates import Links, groups_from_links

    links, cols = found["links"], found["cols"]
    if threshold < found["threshold"]:
        raise ImgSearchError(f"threshold {threshold} is below {found['threshold']}, where links were searched")
    keep = links.score >= threshold
    sub = Links(links.i[keep], links.j[keep], links.score[keep], links.method, links.stats)
    n = len(cols["id"])
    groups = groups_from_links(n, sub, pixels=_pixels(cols))
    return {"collection": found["collection"], "images": n, "threshold": threshold, "method": links.method,
            "search": links.stats, "source": found["source"], "seconds": found["seconds"],
            "groups": [{"size": len(g.members), "min_similarity": g.min_link,
                        "images": [{k: cols[k][i] for k in cols} for i in g.members]} for g in groups]}


@dataclass
class SearchResult:
    collection: CollectionInfo
    hits: list[Hit]
    copies: dict[str, dict] = field(default_factory=dict)  # hit id -> evidence: the same picture as the query


COPY_CHECKS = 10  # the best hits checked for "is this a copy?" (~5-30 ms each: read, decode reduced, compare)


def copies_among(query: bytes, hits: list[Hit], settings: Settings, buckets=None) -> dict[str, dict]:
    """"Is this a copy?" for a search by image: which of the best hits (COPY_CHECKS of them, at or above the
    duplicates' candidate floor) are the same picture as the query, verified from the pixels (samepicture):
    hit id -> the evidence (edits: scaled, cropped, border, band; coverage; ncc). A hit that cannot be read now is
    left out."""
    from imgsearch.samepicture import copies_of
    from imgsearch.sources import read_bytes

    check = [h for h in hits[:COPY_CHECKS] if h.score >= settings.duplicates_candidate_floor]
    if not check:
        return {}
    verdicts = copies_of(query, [h.path for h in check],
                         lambda uri: read_bytes(uri, settings.max_file_bytes, buckets), settings.max_pixels)
    return {h.id: v.evidence() for h, v in zip(check, verdicts) if v is not None and v.same}


def search(image_path: str | None, db: str, k: int, settings: Settings, *, model: str | None = None,
           weights: str | None = None, collection: str | None = None, text: str | None = None,
           tags: list[str] | None = None, filters: "Filters | None" = None) -> SearchResult:
    """Top-k indexed images for an image file or a text (image-text models), among the images with any of `tags`
    if given; with tags alone, the images with those tags, most confident first. The query is embedded by the
    collection's own model (and reduced by its PCA reducer, if it has one), then searched with query expansion
    (settings.query_expansion neighbours; 0 = plain nearest neighbours)."""
    if image_path and text:
        raise ImgSearchError("give a query image or --text, not both")
    if not image_path and not text and not tags:
        raise ImgSearchError("give a query image, --text or --tag")
    with open_store(db, settings) as store:
        info = store.collection_for(model, collection)
        labels = match_tags(info.model, tags) if tags else None
        text = check_text(info.model, text) if text else None
        if labels is not None and not info.has_tags:
            raise ImgSearchError(f"collection {info.name} was indexed before images had tags: re-index it "
                                 "(imgsearch index SRC --overwrite) to search by tag")
        if not image_path and not text:
            return SearchResult(info, store.tagged(info, labels or [], k, filters=filters))
        encoder = QueryEncoder.for_collection(db, info, settings, weights=weights)
        vec = encoder.encode_text([text]) if text else encoder.encode_file(image_path, settings.max_pixels)
        # a one-off query sees every finished write
        hits = store.search(info, vec, k, consistency="Strong", tags=labels, filters=filters,
                            expand=settings.query_expansion, alpha=settings.query_expansion_alpha)[0]
    copies = copies_among(Path(image_path).read_bytes(), hits, settings, buckets_of(settings)) if image_path else {}
    return SearchResult(info, hits, copies)


def stats(db: str, settings: Settings) -> dict:
    with open_store(db, settings) as store:
        infos = store.collections()
    total = sum(i.count for i in infos)
    out: dict = {"db": db, "count": total,
                 "collections": [{**i.__dict__, "fields": sorted(i.fields), "tags": i.has_tags} for i in infos]}
    if len(infos) == 1:
        out["model"], out["dim"] = infos[0].model, infos[0].dim
    return out


@dataclass
class ReduceReport:
    out: str
    reducer: Reducer
    rows: int
    plot: Path
    seconds: float


def reduce(data_dir: str, out: str, settings: Settings, *, variance: float | None = None, dims: int | None = None,
           whiten: bool = False, engine: str = "local", options: EngineOptions | None = None,
           overwrite: bool = False) -> ReduceReport:
    """Fit PCA on a dataset's vectors, write the reduced dataset to `out` with the reducer (and its plot and recall
    report) in out/_reducer."""
    with create_engine(engine, settings, options) as eng:
        return reduce_with(eng, data_dir, out, settings, variance=variance, dims=dims, whiten=whiten,
                           overwrite=overwrite)


def reduce_with(eng: Engine, data_dir: str, out: str, settings: Settings, *, variance: float | None = None,
                dims: int | None = None, whiten: bool = False, overwrite: bool = False) -> ReduceReport:
    from imgsearch.reduce import plot, reduce_table

    started = time.perf_counter()
    if is_remote(out):
        raise ReduceError(f"{out}: reduced embeddings are written to a local folder (their reducer beside them)")
    data = data_dir if hadoop_dataset(data_dir) else dset.locate(data_dir, buckets_of(settings))
    summary = dset.summarize(data)
    if len(summary.models) != 1:
        raise ReduceError(f"{data_dir} holds vectors of {len(summary.models)} models ({summary.models}); need one")
    (model, dim), = summary.models.items()
    if summary.embedded < 2:
        raise ReduceError(f"{data_dir} has {summary.embedded} vectors; PCA needs more")
    if dset.has_data(out) and not overwrite:
        raise DatasetError(f"{out} already holds embeddings; choose another --out or pass --overwrite")
    if dim <= MAX_COVARIANCE_DIM:
        reducer = fit_from_moments(eng.fit_moments(data_dir), model, variance, dims, whiten)
    elif eng.distributed:
        raise ReduceError(f"{dim}-d vectors are too wide for the distributed covariance fit (max "
                          f"{MAX_COVARIANCE_DIM}); use --engine local, which switches to randomized PCA")
    else:  # randomized PCA on the rows, in this process
        rows = [dset.vectors_of(b) for b in eng.stream_rows(data_dir, columns=("vector",))]
        reducer = fit_wide(np.concatenate(rows), model, variance, dims, whiten)

    # quality: neighbours in the reduced space vs exact neighbours in the full space, on a sample
    sample, sampled = [], 0
    for b in dset.iter_embedded(data, columns=("vector",)):
        sample.append(dset.vectors_of(b))
        sampled += b.num_rows
        if sampled >= settings.quality_sample:
            break
    full = np.concatenate(sample)[:settings.quality_sample]
    reducer.quality = {"recall_at_10": round(recall_at_k(full, reducer.transform(full), k=10), 4),
                       "sample": len(full)}

    dset.prepare(out, "replace")
    rows_written = 0
    with dset.PartWriter(out, settings.rows_per_part) as writer:
        for b in dset.iter_embedded(data, columns=tuple(dset.SCHEMA.names)):
            writer.add(reduce_table(pa.Table.from_batches([b]), reducer))
            rows_written += b.num_rows
    folder = reducer.save(Path(out) / REDUCER_SUBDIR)
    png = plot(reducer, folder / "explained_variance.png")
    Reducer.load(folder)  # verify what was written
    return ReduceReport(out=out, reducer=reducer, rows=rows_written, plot=png, seconds=time.perf_counter() - started)
