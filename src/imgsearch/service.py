"""The search service's logic, free of any web framework: the server's routes only translate HTTP to these calls.

It owns one open store (a Milvus Lite file stays locked by the serving process) and one model, loaded at start-up.
Concurrent queries are decoded in the callers' threads and embedded together in micro-batches by one worker thread,
so a burst of requests costs a few forward passes instead of one each.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from imgsearch.buckets import first_line, open_object
from imgsearch.config import Settings, cache_dir_of
from imgsearch.core import FileRecord, Outcome, embed_outcomes
from imgsearch.failures import Reason
from imgsearch.imaging import SNIFF_BYTES, DecodedImage, DecodeError, decode_image, make_thumbnail, sniff_format
from imgsearch.layout import data_dir_for
from imgsearch.models import Embedder, create_model
from imgsearch.jobs import buckets_of
from imgsearch.errors import ImgSearchError
from imgsearch.query import QueryEncoder, check_text, match_tags
from imgsearch.sources import display_name, image_id, is_bucket, path_to_uri, uri_to_path
from imgsearch.browse import BrowseIndex, Page
from imgsearch.filters import Filters
from imgsearch.store import CollectionInfo, Hit, Store, collection_name, open_store

ID_CHARS = frozenset("0123456789abcdef")
EMPTY_INDEX = "the index is empty: add images with 'imgsearch index' first"


def valid_id(image_id_: str) -> bool:
    return len(image_id_) == 32 and set(image_id_) <= ID_CHARS


class SourceUnavailable(RuntimeError):
    """The storage holding an indexed image (a bucket) answered with an error: the service says so (502)."""


@dataclass
class Original:
    """An indexed image's original: a local file, or an open stream of a bucket object (the caller closes it)."""

    name: str
    path: Path | None = None
    stream: object | None = None  # pyarrow NativeFile

    def read_all(self, max_bytes: int) -> bytes:
        """The whole object (at most `max_bytes`, as indexing reads it); closes the stream."""
        try:
            with self.stream as fh:  # type: ignore[union-attr]
                if fh.size() > max_bytes:
                    raise SourceUnavailable(f"{self.name}: {Reason.TOO_LARGE.message(limit=max_bytes)}")
                return fh.read()
        except OSError as exc:
            raise SourceUnavailable(f"{self.name}: {first_line(exc)}") from exc

    def chunks(self, size: int = 1 << 20):
        try:
            while block := self.stream.read(size):  # type: ignore[union-attr]
                yield block
        finally:
            self.stream.close()  # type: ignore[union-attr]


class BadQuery(ValueError):
    """A query the collection cannot answer: text on a model without a text encoder, an unknown tag (HTTP 422)."""


class NotAnImage(ValueError):
    """Upload whose bytes are no known image format (HTTP 415)."""


class BadImage(ValueError):
    """Upload that looks like an image but cannot be used: corrupt, truncated, too many pixels (HTTP 422)."""


@dataclass
class _Query:
    pixels: np.ndarray
    k: int
    path_prefix: str | None
    info: CollectionInfo
    tags: tuple[str, ...] | None = None  # only images with any of these tags
    filters: Filters | None = None
    expand: int = 0  # query expansion neighbours (0: off)
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class _Answer:
    hits: list[Hit]
    timings_ms: dict[str, float]


class QueryBatcher:
    """Serves queries from many threads in shared steps: one forward pass and one Milvus search call per batch.

    On a small CPU both steps cost far less per query in a batch (Milvus Lite: 5 ms for one query, 1.3 ms each for
    16), so under load the service answers more queries per second, and no slower when idle (it waits `wait_ms` at
    most for company).
    """

    def __init__(self, encoder: QueryEncoder, store: Store, max_batch: int, wait_ms: float, alpha: float = 3.0):
        self.alpha = alpha  # query expansion's exponent
        self.encoder = encoder  # the collection's model and PCA reducer
        self.store = store
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._queue: queue.Queue[tuple[_Query, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="imgsearch-query-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.images = 0

    def search(self, query: _Query, timeout: float = 60.0) -> _Answer:
        fut: Future = Future()
        self._queue.put((query, fut))
        return fut.result(timeout=timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            deadline = time.perf_counter() + self.wait_s
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                items.append(nxt)
            try:
                self._answer(items)
            except Exception as exc:  # hand the failure to every waiting request
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)

    def _answer(self, items: list[tuple[_Query, Future]]) -> None:
        t0 = time.perf_counter()
        vecs = self.encoder.encode(np.stack([q.pixels for q, _ in items]))
        t1 = time.perf_counter()
        groups: dict[tuple, list[int]] = {}
        for i, (q, _) in enumerate(items):
            groups.setdefault((q.info.name, q.k, q.path_prefix, q.tags, q.filters, q.expand), []).append(i)
        results: dict[int, list[Hit]] = {}
        for idx in groups.values():
            q0 = items[idx[0]][0]
            for i, hits in zip(idx, self.store.search(q0.info, vecs[idx], q0.k, path_prefix=q0.path_prefix,
                                                      tags=q0.tags, filters=q0.filters, expand=q0.expand,
                                                      alpha=self.alpha)):
                results[i] = hits
        t2 = time.perf_counter()
        self.batches += 1
        self.images += len(items)
        for i, (q, fut) in enumerate(items):
            fut.set_result(_Answer(results[i], {"queue": (t0 - q.queued) * 1e3, "embed": (t1 - t0) * 1e3,
                                                "search": (t2 - t1) * 1e3, "batch": float(len(items))}))


@dataclass
class SearchOutcome:
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    message: str | None = None
    copies: dict[str, dict] = field(default_factory=dict)  # hit id -> evidence: the same picture as the query


def query_embedder(model: str, s: Settings) -> tuple[Embedder, dict]:
    """The model that embeds queries: with runtime and precision left to `auto` on a CPU, the path measured fastest
    for one query at the service's thread count on this machine (measured once, then remembered); otherwise the path
    the settings ask for."""
    from imgsearch.models.probe import fastest_for_queries
    from imgsearch.models.torch_session import resolve_device

    weights = s.weights or None
    if s.runtime == "auto" and s.precision == "auto" and resolve_device(s.device).type == "cpu":
        return fastest_for_queries(model, s.serve_torch_threads, cache_dir_of(s), weights=weights)
    emb = create_model(model, weights=weights, device=s.device, precision=s.precision, runtime=s.runtime,
                       cache_dir=cache_dir_of(s), threads=s.serve_torch_threads)
    return emb, {"runtime": emb.runtime, "precision": emb.precision, "why": emb.plan.why}


class SearchService:
    def __init__(self, db: str, settings: Settings, model: str | None = None, embedder: Embedder | None = None):
        self.settings = s = settings
        self.db = db
        self.buckets = buckets_of(s)
        self.store: Store = open_store(db, s, create=True)
        try:
            infos = self.store.collections()
            chosen = self.store.collection_for(model) if infos else None
            self.collection_name = chosen.name if chosen else collection_name(model or s.model)
            self.model_name = chosen.model if chosen else (model or s.model)
            if embedder is None:
                embedder, self.query_path = query_embedder(self.model_name, s)
            else:
                self.query_path = {"runtime": embedder.runtime, "precision": embedder.precision, "why": "given"}
            if chosen is not None:
                self.encoder = QueryEncoder.for_collection(db, chosen, s, threads=s.serve_torch_threads,
                                                           embedder=embedder)
            else:  # an empty database: the first added image creates the collection
                self.encoder = QueryEncoder(embedder)
            self.embedder = self.encoder.embedder
            self.reducer = self.encoder.reducer
            self.batcher = QueryBatcher(self.encoder, self.store, s.query_batch_max, s.query_batch_wait_ms,
                                        s.query_expansion_alpha)
        except Exception:
            self.store.close()
            raise
        base = data_dir_for(db, s)
        self.thumb_dir = base / "thumbnails"
        self.upload_dir = base / "uploads"
        self._write_lock = threading.Lock()
        self._text_lock = threading.Lock()
        self._info_lock = threading.Lock()
        self._info: CollectionInfo | None = None
        self._info_at = 0.0
        self.started = time.time()
        self.browse = BrowseIndex(self.store)
        self._dups: dict = {}  # verified? -> {"key": (collection, count, verified), "found", "error", "thread"}
        self._dups_lock = threading.Lock()

    def close(self) -> None:
        self.batcher.close()
        self.store.close()

    # -- collection --------------------------------------------------------------------------------------------------
    INFO_MAX_AGE_S = 2.0

    def info(self, fresh: bool = False) -> CollectionInfo | None:
        """The served collection (None if it does not exist yet). Cached for a moment: looking it up costs several
        RPCs and a row count, too much to repeat on every search; this process's writes refresh it at once."""
        now = time.monotonic()
        with self._info_lock:
            if not fresh and self._info_at and now - self._info_at < self.INFO_MAX_AGE_S:
                return self._info
            self._info = next((i for i in self.store.collections() if i.name == self.collection_name), None)
            self._info_at = now
            return self._info

    def count(self) -> int:
        info = self.info()
        return info.count if info else 0

    # -- queries -----------------------------------------------------------------------------------------------------
    def decode_upload(self, data: bytes) -> DecodedImage:
        """Decode an uploaded image like an indexed one; NotAnImage (415) or BadImage (422) if it cannot be used."""
        if not data:
            raise BadImage("empty upload")
        if sniff_format(data[:SNIFF_BYTES]) is None:
            raise NotAnImage("not an image: the upload is no known image format (JPEG, PNG, GIF, WebP, BMP, TIFF)")
        try:
            return decode_image(data, self.embedder.prep, self.settings.max_pixels)
        except DecodeError as exc:
            raise BadImage(str(exc)) from None

    def expansion(self, expand: bool) -> int:
        return self.settings.query_expansion if expand else 0

    def search_bytes(self, data: bytes, k: int, path_prefix: str | None = None,
                     tags: list[str] | None = None, filters: Filters | None = None,
                     expand: bool = True) -> SearchOutcome:
        from imgsearch.pipeline import copies_among

        t0 = time.perf_counter()
        pixels = self.decode_upload(data).pixels
        t1 = time.perf_counter()
        info = self.info()
        if info is None or info.count == 0:
            return SearchOutcome([], {"decode": (t1 - t0) * 1e3}, message=EMPTY_INDEX)
        labels = self.tag_labels(info, tags)
        answer = self.batcher.search(_Query(pixels, k, path_prefix, info, labels, filters, self.expansion(expand)))
        t2 = time.perf_counter()
        copies = copies_among(data, answer.hits, self.settings, self.buckets)  # "is this a copy?"
        return SearchOutcome(answer.hits, {"decode": (t1 - t0) * 1e3, **answer.timings_ms,
                                           "copy_check": (time.perf_counter() - t2) * 1e3}, copies=copies)

    def search_text(self, text: str, k: int, path_prefix: str | None = None,
                    tags: list[str] | None = None, filters: Filters | None = None,
                    expand: bool = True) -> SearchOutcome:
        """Images matching a text query (collections of image-text models); BadQuery otherwise."""
        try:
            text = check_text(self.model_name, text)
        except ImgSearchError as exc:
            raise BadQuery(str(exc)) from None
        info = self.info()
        if info is None or info.count == 0:
            return SearchOutcome([], {}, message=EMPTY_INDEX)
        labels = self.tag_labels(info, tags)
        t0 = time.perf_counter()
        with self._text_lock:  # one text forward pass at a time: torch runs it on every core anyway
            vec = self.encoder.encode_text([text])
        t1 = time.perf_counter()
        hits = self.store.search(info, vec, k, path_prefix=path_prefix, tags=labels, filters=filters,
                                 expand=self.expansion(expand), alpha=self.settings.query_expansion_alpha)[0]
        return SearchOutcome(hits, {"embed": (t1 - t0) * 1e3, "search": (time.perf_counter() - t1) * 1e3})

    def search_tags(self, tags: list[str], k: int, path_prefix: str | None = None,
                    filters: Filters | None = None) -> SearchOutcome:
        """Images auto-tagged with any of the labels the keywords mean, most confident first."""
        info = self.info()
        if info is None or info.count == 0:
            return SearchOutcome([], {}, message=EMPTY_INDEX)
        labels = self.tag_labels(info, tags)
        t0 = time.perf_counter()
        hits = self.store.tagged(info, list(labels or ()), k, path_prefix=path_prefix, filters=filters)
        took = {"search": (time.perf_counter() - t0) * 1e3}
        return SearchOutcome(hits, took, message=None if hits else
                             f"no image is tagged {' or '.join(labels or ())}")

    def tag_labels(self, info: CollectionInfo, keywords: list[str] | None) -> tuple[str, ...] | None:
        """The labels keywords mean for this collection (None: no tag filter); BadQuery if none can match."""
        if not keywords:
            return None
        try:
            labels = match_tags(self.model_name, keywords)
        except ImgSearchError as exc:
            raise BadQuery(str(exc)) from None
        if not info.has_tags:
            raise BadQuery(f"collection {info.name} was indexed before images had tags: re-index it "
                           "(imgsearch index SRC --overwrite) to search by tag")
        return tuple(labels)

    def tag_vocabulary(self, prefix: str = "", limit: int = 50) -> list[str]:
        """Tag labels of the served model that start with `prefix` (or have a word that does), for suggestions."""
        p = prefix.strip().lower()
        labels = self.embedder.labels
        starts = [lb for lb in labels if lb.lower().startswith(p)]
        words = [lb for lb in labels if lb not in starts and any(w.startswith(p) for w in lb.lower().split())]
        return (starts + words)[:limit]

    def similar(self, image_id_: str, k: int, path_prefix: str | None = None,
                filters: Filters | None = None, expand: bool = True) -> SearchOutcome | None:
        """Neighbours of an indexed image (itself excluded); None if the id is not indexed."""
        info = self.info()
        if info is None or not valid_id(image_id_):
            return None
        t0 = time.perf_counter()
        rows = self.store.get(info, [image_id_], with_vectors=True)
        if not rows:
            return None
        vec = np.asarray(rows[0]["vector"], dtype=np.float32)[None]
        hits = [h for h in self.store.search(info, vec, k + 1, path_prefix=path_prefix, filters=filters,
                                             expand=self.expansion(expand), exclude={image_id_},
                                             alpha=self.settings.query_expansion_alpha)[0]
                if h.id != image_id_][:k]
        return SearchOutcome(hits, {"search": (time.perf_counter() - t0) * 1e3})

    # -- browsing, duplicates, status --------------------------------------------------------------------------------
    def browse_page(self, filters: Filters, keywords: list[str] | None, sort: str, offset: int, limit: int) -> Page:
        info = self.info()
        if info is None:
            return Page(0, [])
        return self.browse.page(info, filters.with_tags(self.tag_labels(info, keywords)), sort, offset, limit)

    def folders(self, parent: str | None) -> dict:
        info = self.info()
        if info is None:
            return {"folder": "", "images_here": 0, "total": 0, "children": []}
        return self.browse.folders(info, parent)

    DUPLICATES_MIN = 0.6  # links are searched once at this similarity; any higher threshold is a filter of them

    def duplicates(self, threshold: float, wait_s: float = 10.0, verified: bool = True) -> dict | None:
        """Duplicate groups, largest first; None while they are still being computed (in a background thread,
        started by the first request, kept until the collection changes). `verified` (the default): the same picture,
        decided from the pixels (`pipeline.verified_duplicate_groups`: identical files and edited copies, each checked
        against its group's largest image, with the evidence and a proposal of the one to keep). Else look-alikes:
        images linked at cosine >= `threshold` (>= DUPLICATES_MIN), which chain."""
        from imgsearch import pipeline

        info = self.info()
        if info is None:
            return {"images": 0, "threshold": threshold, "groups": [], "verified": verified, "skipped": []}
        key = (info.name, info.count, verified)
        with self._dups_lock:
            state = self._dups.get(verified)
            if state is None or state["key"] != key or state.get("error"):
                state = {"key": key, "found": None, "error": None}

                def work(state: dict = state) -> None:  # writes only its own state: a newer one may replace it
                    try:
                        if verified:
                            found = pipeline.duplicate_links(self.store, info, self.db, self.settings, progress=False,
                                                             candidates=self.settings.duplicates_candidates)
                            state["found"] = pipeline.verified_duplicate_groups(found, self.settings, progress=False)
                        else:
                            state["found"] = pipeline.duplicate_links(self.store, info, self.db, self.settings,
                                                                      threshold=self.DUPLICATES_MIN, progress=False)
                    except Exception as exc:  # reported to the caller, computed again on the next request
                        state["error"] = f"{type(exc).__name__}: {exc}"
                state["thread"] = threading.Thread(target=work, name="imgsearch-duplicates", daemon=True)
                self._dups[verified] = state
                state["thread"].start()
        state["thread"].join(timeout=wait_s)
        if state.get("error"):
            raise RuntimeError(state["error"])
        found = state.get("found")
        if found is None:
            return None
        return found if verified else pipeline.duplicate_groups(found, threshold)

    def duplicate_group(self, image_id_: str, threshold: float, k: int = 50) -> SearchOutcome | None:
        """The image's near-duplicates: indexed images at cosine >= threshold to it (itself excluded), and which of
        them are the same picture (verified from the pixels, as a search by image does)."""
        from imgsearch.pipeline import copies_among

        out = self.similar(image_id_, k, expand=False)  # plain cosines: the threshold means what it says
        if out is None:
            return None
        hits = [h for h in out.hits if h.score >= threshold]
        try:
            data = self._source_bytes(image_id_)
        except (OSError, SourceUnavailable):  # the list still answers; only the copy marks need the file
            data = None
        return SearchOutcome(hits, copies=copies_among(data, hits, self.settings, self.buckets) if data else {})

    def status(self) -> dict:
        from imgsearch import pipeline
        from imgsearch.errors import DatasetError

        info = self.info()
        try:
            failures = pipeline.failures(self.db, self.settings, model=info.model if info else None)
        except (DatasetError, OSError):
            failures = []
        return {"collection": info.name if info else None, "count": info.count if info else 0,
                "model": self.model_name, "dim": info.dim if info else self.embedder.dim,
                "reducer": info.reducer if info else None, "index_type": info.index_type if info else None,
                "index_params": info.index_params if info else {}, "tags": bool(info and info.has_tags),
                "text": self.embedder.has_text, "fields": sorted(info.fields) if info else [],
                "last_run": pipeline.last_run(self.db, self.settings), "failures_total": len(failures),
                "failures": failures[:500], "db": self.db}

    # -- images ------------------------------------------------------------------------------------------------------
    def record(self, image_id_: str) -> dict | None:
        info = self.info()
        if info is None or not valid_id(image_id_):
            return None
        rows = self.store.get(info, [image_id_])
        return rows[0] if rows else None

    def original(self, image_id_: str) -> "Original | None":
        """The original of an indexed image, looked up by id (clients never name a path or key): a local file, or
        an open stream of its object in a bucket. None when it is gone; SourceUnavailable when its storage fails."""
        rec = self.record(image_id_)
        if rec is None:
            return None
        uri = rec["path"]
        if uri.startswith("file:"):
            path = Path(uri_to_path(uri))
            return Original(display_name(uri), path=path) if path.is_file() else None
        if not is_bucket(uri):
            return None
        try:
            stream = open_object(uri, self.buckets)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceUnavailable(f"{display_name(uri)}: {first_line(exc)}") from exc
        return Original(display_name(uri), stream=stream)

    def _source_bytes(self, image_id_: str) -> bytes | None:
        got = self.original(image_id_)
        if got is None:
            return None
        return got.path.read_bytes() if got.path is not None else got.read_all(self.settings.max_file_bytes)

    def thumbnail(self, image_id_: str) -> Path | None:
        """Path of the cached thumbnail JPEG, made on first request (from the local file or the bucket object)."""
        cached = self.thumb_dir / image_id_[:2] / f"{image_id_}.jpg"
        if valid_id(image_id_) and cached.is_file():
            return cached
        try:
            data = self._source_bytes(image_id_)
        except OSError:
            return None
        if data is None:
            return None
        try:
            jpeg = make_thumbnail(data, self.settings.thumbnail_size, self.settings.max_pixels)
        except DecodeError:
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, cached)
        return cached

    def add_image(self, filename: str, data: bytes) -> dict:
        """Store an uploaded image under the uploads folder and index it. Same bytes -> same file and id."""
        im = self.decode_upload(data)
        fmt = sniff_format(data[:SNIFF_BYTES]) or "image"
        digest = hashlib.sha256(data).hexdigest()[:32]
        ext = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}.get(fmt, "")
        safe_stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(filename or "upload").stem)[:80]
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        target = self.upload_dir / f"{digest}-{safe_stem or 'upload'}{ext}"
        if not target.exists():
            tmp = target.with_suffix(target.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        uri = path_to_uri(target)
        record = FileRecord(uri=uri, id=image_id(uri), size=len(data), mtime=datetime.now(timezone.utc))
        vec_table = embed_outcomes(self.embedder, [Outcome(record, image=im)])
        if self.reducer is not None:  # a reduced collection: the new vector goes through the same PCA
            from imgsearch.reduce import reduce_table

            vec_table = reduce_table(vec_table, self.reducer)
        with self._write_lock:
            self.store.upsert_batches(vec_table.to_batches(), batch_rows=self.settings.insert_batch,
                                      reducer=self.reducer.id if self.reducer is not None else None)
        self.info(fresh=True)
        self.browse.invalidate()
        return {"id": record.id, "path": uri, "name": display_name(uri)}

    def delete(self, image_id_: str) -> bool:
        info = self.info()
        if info is None or not valid_id(image_id_) or not self.store.get(info, [image_id_]):
            return False
        with self._write_lock:
            self.store.delete(info.name, [image_id_])
        self.info(fresh=True)
        self.browse.invalidate()
        cached = self.thumb_dir / image_id_[:2] / f"{image_id_}.jpg"
        cached.unlink(missing_ok=True)
        return True
