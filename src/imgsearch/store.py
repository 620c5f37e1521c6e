"""The vector store: Milvus through pymilvus.MilvusClient (a `.db` file path -> Milvus Lite, http://host:19530 -> server).

One collection per model (`images_<model>`); the model name and dim are written into the collection's description so
that a query is always embedded by the collection's model. Inserts are upserts by id: loading twice adds nothing.

The vector index is chosen by collection size (`plan_index`) and rebuilt when a load moves the collection into
another size class, so the default is right at 1k and at 1M vectors; `index_type` in the settings overrides it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgsearch import dataset as dset
from imgsearch.buckets import first_line
from imgsearch.config import LITE_FLAT_MAX_FLOATS, Settings
from imgsearch.dataset import vectors_of
from imgsearch.errors import StoreError
from imgsearch.filters import FilterError, Filters, folder_uri, micros, prefix_range
from imgsearch.layout import is_server_uri
from imgsearch.vectors import unit

log = logging.getLogger(__name__)

COLLECTION_PREFIX = "images_"
MAX_PATH_LEN = 65_535
# Vector bytes per insert call: larger calls load faster, but Milvus Lite stalls on calls of ~10 MB and more.
MAX_CALL_BYTES = 4 * 1024 * 1024
# Vectors are L2-normalised before they are stored, so inner product = cosine; IP is the cheaper search.
METRIC = "IP"


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str
    dim: int
    count: int
    index_type: str
    reducer: str | None = None  # id of the PCA reducer the vectors went through (queries must too)
    index_params: dict = field(default_factory=dict)  # build parameters of the current index (nlist, M, ...)
    fields: frozenset[str] = frozenset()  # scalar fields it stores (collections made before tags lack "tags")

    @property
    def has_tags(self) -> bool:
        return "tags" in self.fields


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    score: float
    tags: tuple[str, ...] = ()
    tag_scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class IndexPlan:
    """A vector index for a collection of some size: its type, build parameters and search parameters."""
    index_type: str  # FLAT | IVF_FLAT | HNSW
    build: dict
    search: dict
    why: str = ""


INDEX_TYPES = ("auto", "FLAT", "IVF_FLAT", "HNSW")


def ivf_nlist(count: int) -> int:
    """IVF cells: about 4 sqrt(n), a power of two in [64, 16384] (so that a cell holds ~sqrt(n)/4 vectors)."""
    return int(min(16_384, max(64, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(max(count, 1))))))))


def ivf_nprobe(nlist: int, settings_nprobe: int = 0) -> int:
    """Cells probed per query: 1/32 of them (min 16, max 256) unless set; chosen from the recall sweep of
    `bench scale` (recall@10 >= 0.95 on real-spectrum vectors at 1M)."""
    return settings_nprobe or int(min(256, max(16, nlist // 32)))


def plan_index(count: int, dim: int, *, server: bool, index_type: str = "auto", flat_max_floats: int = LITE_FLAT_MAX_FLOATS,
               nprobe: int = 0, hnsw: tuple[int, int, int] = (16, 200, 64), nlist: int = 0) -> IndexPlan:
    """The index for `count` vectors of `dim` dims. auto: a Milvus server gets HNSW at every size (fast at 1k and
    at 1M); Milvus Lite (FLAT or IVF_FLAT only) keeps exact FLAT search while one query scans at most
    `flat_max_floats` numbers (78k x 1280 or 1M x 96: up to ~45 ms on 2 cores), then IVF_FLAT, whose recall
    on Lite is lower (see config.LITE_FLAT_MAX_FLOATS)."""
    if index_type not in INDEX_TYPES:
        raise StoreError(f"index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    m, ef_construction, ef = hnsw
    if index_type == "auto":
        if server:
            index_type, why = "HNSW", "a Milvus server: HNSW at every size"
        elif count * dim <= flat_max_floats:
            index_type, why = "FLAT", f"{count} x {dim} within {flat_max_floats:,} floats: exact search is fast enough"
        else:
            index_type, why = "IVF_FLAT", f"{count} x {dim} over {flat_max_floats:,} floats: IVF_FLAT"
    else:
        why = "set in the settings (index_type)"
    if index_type == "HNSW":
        if not server:
            raise StoreError("Milvus Lite has no HNSW index (only FLAT and IVF_FLAT): use a Milvus server URI or "
                             "index_type FLAT / IVF_FLAT / auto")
        return IndexPlan("HNSW", {"M": m, "efConstruction": ef_construction}, {"ef": ef}, why)
    if index_type == "IVF_FLAT":
        nlist = nlist or ivf_nlist(count)
        return IndexPlan("IVF_FLAT", {"nlist": nlist}, {"nprobe": ivf_nprobe(nlist, nprobe)}, why)
    return IndexPlan("FLAT", {}, {}, why)


def collection_name(model: str, reducer: str | None = None, dim: int | None = None) -> str:
    base = COLLECTION_PREFIX + re.sub(r"[^0-9A-Za-z_]", "_", model)
    return f"{base}_pca{dim}_{reducer}" if reducer else base


class Store:
    """An open connection to one Milvus database. Use as a context manager, or call close()."""

    def __init__(self, uri: str, *, create: bool = False, token: str = "", hnsw: tuple[int, int, int] = (16, 200, 64),
                 index_type: str = "auto", flat_max_floats: int = LITE_FLAT_MAX_FLOATS, nprobe: int = 0, nlist: int = 0,
                 import_dir: str = ""):
        self.uri = uri
        self.token = token
        self.hnsw = hnsw
        self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef = hnsw
        self.index_type, self.flat_max_floats, self.nprobe, self.nlist = index_type, flat_max_floats, nprobe, nlist
        self.is_lite = not is_server_uri(uri)
        self.import_dir = import_dir if not self.is_lite else ""  # Milvus Lite has no bulk import
        self._orm_alias: str | None = None
        if self.is_lite:
            path = Path(uri).expanduser()
            if path.suffix != ".db":
                raise StoreError(f"{uri}: a Milvus Lite database is a file whose name ends in .db (or use http://host:19530)")
            if not path.exists():
                if not create:
                    raise StoreError(f"no index at {uri}: the database file does not exist; run 'imgsearch index' first")
                path.parent.mkdir(parents=True, exist_ok=True)
            self._client_uri = str(path.resolve())
        else:
            self._client_uri = uri
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite imports the deprecated pkg_resources
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:  # pragma: no cover - a dependency
                raise StoreError(f"pymilvus is not installed: {exc}") from None
            try:
                self.client = MilvusClient(uri=self._client_uri, token=token) if token else MilvusClient(uri=self._client_uri)
            except Exception as exc:
                raise StoreError(self._open_error(exc)) from None

    def _open_error(self, exc: Exception) -> str:
        msg = getattr(exc, "message", None) or str(exc)
        if self.is_lite and "Open local milvus failed" in msg:
            return (f"cannot open {self.uri}: the database is in use by another process (Milvus Lite allows one process "
                    "per file; stop the other process, e.g. 'imgsearch serve', or use a Milvus server URI)")
        if self.is_lite and "milvus-lite is required" in msg:
            return "Milvus Lite is not installed or cannot load: pip install 'milvus-lite>=2.5.1,<2.6' 'setuptools<82'"
        return f"cannot connect to Milvus at {self.uri}: {msg.splitlines()[0] if msg else type(exc).__name__}"

    # -- context manager ------------------------------------------------------------------------------------------
    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_orm_alias", None):
            from pymilvus import connections

            _orm(connections.disconnect, self._orm_alias)
            self._orm_alias = None
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            finally:
                self.client = None
                if self.is_lite:
                    # MilvusClient.close() leaves the Lite server running (and the file locked) until this process
                    # exits; release it so that the next command, or another process, can open the file.
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self._client_uri)

    # -- collections ----------------------------------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        infos = []
        for name in sorted(self.client.list_collections()):
            if not name.startswith(COLLECTION_PREFIX):
                continue
            meta = self._meta(name)
            if meta is None:
                continue
            index_type, params = self.current_index(name)
            infos.append(CollectionInfo(name=name, model=meta["model"], dim=int(meta["dim"]), count=self.count(name),
                                        index_type=index_type or meta.get("index_type", ""),
                                        reducer=meta.get("reducer"), index_params=params,
                                        fields=self.fields(name)))
        return infos

    def fields(self, name: str) -> frozenset[str]:
        """The scalar fields of a collection (its schema as Milvus holds it)."""
        desc = self.client.describe_collection(name)
        return frozenset(f["name"] for f in desc.get("fields", []) if f["name"] not in ("id", "vector"))

    def current_index(self, name: str) -> tuple[str, dict]:
        """The vector index a collection has now: type and build parameters (from Milvus, not our description)."""
        try:
            desc = self.client.describe_index(name, "vector") or {}
        except Exception:  # noqa: BLE001 - no index yet
            return "", {}
        params = desc.get("params") if isinstance(desc.get("params"), dict) else desc
        keep = {k: int(v) for k, v in params.items() if k in ("nlist", "M", "efConstruction") and str(v).isdigit()}
        return str(desc.get("index_type", "")), keep

    def index_progress(self, name: str) -> tuple[int, int]:
        """(rows indexed, rows in all) of a collection's vector index: a server builds it in the background after
        inserts (searches meanwhile scan the unindexed segments); Milvus Lite reports its own figures."""
        desc = self.client.describe_index(name, "vector") or {}
        return int(desc.get("indexed_rows", 0) or 0), int(desc.get("total_rows", 0) or 0)

    def plan(self, count: int, dim: int) -> IndexPlan:
        return plan_index(count, dim, server=not self.is_lite, index_type=self.index_type,
                          flat_max_floats=self.flat_max_floats, nprobe=self.nprobe, hnsw=self.hnsw, nlist=self.nlist)

    def fit_index(self, name: str, dim: int) -> str | None:
        """Rebuild a collection's index when its size now calls for another type, or for 4x more/fewer IVF cells
        (so a growing collection is rebuilt a few times, not at every load). Returns what was done, or None."""
        count = self.count(name)
        want = self.plan(count, dim)
        have_type, have = self.current_index(name)
        if have_type == want.index_type and (want.index_type != "IVF_FLAT" or
                                             (have.get("nlist") == want.build["nlist"] if self.nlist else
                                              0.25 < have.get("nlist", 0) / want.build["nlist"] < 4)):
            return None
        started = time.perf_counter()
        self.client.release_collection(name)
        self.client.drop_index(name, "vector")
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=want.index_type, metric_type=METRIC, params=want.build)
        self.client.create_index(name, params)
        self.client.load_collection(name)
        done = (f"index of {name} rebuilt: {have_type or 'none'} {have} -> {want.index_type} {want.build} for {count} "
                f"vectors ({want.why}) in {time.perf_counter() - started:.1f} s")
        log.info(done)
        return done

    def _meta(self, name: str) -> dict | None:
        desc = self.client.describe_collection(name).get("description") or ""
        try:
            meta = json.loads(desc).get("imgsearch")
        except (ValueError, AttributeError):
            return None
        return meta if isinstance(meta, dict) and "model" in meta and "dim" in meta else None

    def collection_for(self, model: str | None = None, name: str | None = None) -> CollectionInfo:
        """The collection to search: by name, or the only one (of `model`, if given)."""
        infos = self.collections()
        if not infos:
            raise StoreError(f"{self.uri} holds no image collection yet; run 'imgsearch index' or 'imgsearch load' first")
        if name is not None:
            for info in infos:
                if info.name == name:
                    return info
            raise StoreError(f"{self.uri} has no collection {name!r}; it has: {', '.join(i.name for i in infos)}")
        matching = [i for i in infos if model is None or i.model == model]
        if len(matching) == 1:
            return matching[0]
        if len(matching) > 1:
            raise StoreError(f"{self.uri} holds several collections ({', '.join(i.name for i in matching)}); "
                             "choose one with --collection")
        for info in infos:
            if info.model == model:
                return info
        have = ", ".join(f"{i.model} ({i.dim}-d)" for i in infos)
        raise StoreError(f"{self.uri} holds no vectors of model {model!r}; it holds: {have}. "
                         "A query must be embedded by the collection's own model")

    def ensure_collection(self, model: str, dim: int, reducer: str | None = None) -> str:
        from pymilvus import DataType, MilvusClient

        name = collection_name(model, reducer, dim)
        if self.client.has_collection(name):
            meta = self._meta(name)
            if meta is None or meta["model"] != model or int(meta["dim"]) != dim or meta.get("reducer") != reducer:
                raise StoreError(f"collection {name} in {self.uri} was not made by imgsearch for {model} ({dim}-d): {meta}")
            return name
        plan = self.plan(0, dim)
        description = json.dumps({"imgsearch": {"model": model, "dim": dim, "metric": METRIC,
                                                "index_type": plan.index_type, "schema": 2, "reducer": reducer}})
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_LEN)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("width", DataType.INT32)
        schema.add_field("height", DataType.INT32)
        schema.add_field("bytes", DataType.INT64)
        schema.add_field("mtime_us", DataType.INT64)
        # schema 2: format and auto-tags (filterable: array_contains_any); an image without tags has empty arrays
        schema.add_field("format", DataType.VARCHAR, max_length=16)
        schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS,
                         max_length=MAX_TAG_LEN)
        schema.add_field("tag_scores", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=MAX_TAGS)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type=plan.index_type, metric_type=METRIC, params=plan.build)
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
        return name

    def drop(self, name: str) -> None:
        self.client.drop_collection(name)

    def count(self, name: str) -> int:
        stats = self.client.get_collection_stats(name)
        return int(stats.get("row_count", 0))

    # -- writing --------------------------------------------------------------------------------------------------
    def upsert_batches(self, batches: Iterable[pa.RecordBatch], batch_rows: int = 500,
                       reducer: str | None = None, *, insert: bool | None = False,
                       advance: Callable[[int], None] = lambda n: None) -> dict[str, int]:
        """Upsert embedding rows (dataset schema) into their model's collection, at most `batch_rows` rows (and
        about MAX_CALL_BYTES of vectors) per call, then fit each written collection's index to its new size.

        `insert=True` is for rows the caller knows the collection lacks: a plain insert, several times cheaper than
        an upsert (which deletes first); with an import folder (a server's `import_dir`) they are bulk-imported.
        `insert=None` decides row by row: the ids the collection already holds (read once, ids only; none for a new
        or empty collection) are upserted, the others inserted, so a load resumed after a crash never duplicates a
        row. Returns rows written per collection; rows of several models
        go to several collections.
        """
        written: dict[str, int] = {}
        known: dict[tuple[str, int], str] = {}
        fields: dict[str, frozenset[str]] = {}
        held: dict[str, pa.Array | None] = {}  # per collection, with insert=None: the ids it held before (None: none)
        imports: dict[str, BulkImport] = {}  # per collection, with an import folder: new rows as bulk-import files
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            models = table.column("model").unique().to_pylist()
            for model in models:
                part = table.filter(pc.equal(table["model"], model)) if len(models) > 1 else table
                dims = part.column("dim").unique().to_pylist()
                if len(dims) != 1:
                    raise StoreError(f"rows of model {model} have several dims: {dims}")
                key = (model, int(dims[0]))
                if key not in known:
                    known[key] = self.ensure_collection(*key, reducer=reducer)
                    fields[known[key]] = self.fields(known[key])
                    if insert is None:
                        self.await_imports(known[key])  # a killed load's imports finish before ids are read
                        ids = self.ids(known[key])
                        held[known[key]] = pa.array(sorted(ids), pa.string()) if ids else None
                name = known[key]
                step = max(1, min(batch_rows, MAX_CALL_BYTES // (4 * key[1])))
                if insert is None:
                    mask = pc.is_in(part["id"], held[name]) if held[name] is not None else None
                    groups = ([(part, self.client.insert)] if mask is None else
                              [(part.filter(pc.invert(mask)), self.client.insert), (part.filter(mask),
                                                                                    self.client.upsert)])
                else:
                    groups = [(part, self.client.insert if insert else self.client.upsert)]
                for rows_, write in groups:
                    if write == self.client.insert and self.import_dir:
                        if name not in imports:
                            imports[name] = BulkImport(self, name, key[1])
                        imports[name].add(rows_, fields[name])
                        written[name] = written.get(name, 0) + rows_.num_rows
                        advance(rows_.num_rows)
                        continue
                    for start in range(0, rows_.num_rows, step):
                        chunk = rows_.slice(start, step)
                        write(name, _rows(chunk, fields[name]))
                        written[name] = written.get(name, 0) + chunk.num_rows
                        advance(chunk.num_rows)
        for imp in imports.values():
            imp.finish()
        for (_, dim), name in known.items():
            self.client.flush(name)
            self.fit_index(name, dim)
        return written

    def orm_alias(self) -> str:
        """A pymilvus ORM connection to this server (bulk import is not in MilvusClient's API for Milvus 2.3)."""
        if self._orm_alias is None:
            from pymilvus import connections

            alias = f"imgsearch-{id(self):x}"
            _orm(connections.connect, alias=alias, uri=self._client_uri, token=self.token)
            self._orm_alias = alias
        return self._orm_alias

    def await_imports(self, name: str, timeout: float = 3600) -> None:
        """Wait for a collection's unfinished bulk imports (a killed load leaves them running on the server): the
        rows they add must be seen before anyone decides which rows the collection lacks."""
        if self.is_lite:
            return
        from pymilvus import utility

        deadline = time.monotonic() + timeout
        while True:
            tasks = _orm(utility.list_bulk_insert_tasks, collection_name=name, using=self.orm_alias())
            busy = [t for t in tasks if t.state_name not in IMPORT_ENDED]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise StoreError(f"{len(busy)} bulk imports into {name} still running after {timeout:.0f} s")
            time.sleep(1)

    def ids(self, name: str) -> set[str]:
        """Every id a collection holds (nothing is read from an empty one)."""
        if self.count(name) == 0:
            return set()
        return {r["id"] for rows in self.rows(name, ["id"], batch=16384) for r in rows}

    def file_keys(self, name: str) -> dict[str, tuple[str, int, int]]:
        """id -> (path, bytes, mtime_us) of every row: what `index` compares with its dataset to repair the collection."""
        out: dict[str, tuple[str, int, int]] = {}
        for rows in self.rows(name, ["path", "bytes", "mtime_us"], batch=8192):
            for r in rows:
                out[r["id"]] = (r["path"], r["bytes"], r["mtime_us"])
        return out

    def rows(self, name: str, fields: list[str], batch: int = 4096):
        """Every row of a collection (with the given fields), in batches: for whole-collection work like duplicates."""
        # Milvus Lite has no MVCC timestamp to give; pymilvus warns and uses its own, which is what we want.
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
        it = self.client.query_iterator(name, batch_size=batch, filter="", output_fields=fields)
        try:
            while True:
                got = it.next()
                if not got:
                    return
                yield got
        finally:
            it.close()

    def delete(self, name: str, ids: list[str]) -> None:
        if ids:
            self.client.delete(name, ids=ids)
            self.client.flush(name)

    # -- reading --------------------------------------------------------------------------------------------------
    def search(self, info: CollectionInfo, vectors: np.ndarray, k: int, path_prefix: str | None = None,
               consistency: str = "Bounded", tags: Iterable[str] | None = None,
               filters: Filters | None = None, expand: int = 0, alpha: float = 3.0,
               exclude: set[str] | None = None) -> list[list[Hit]]:
        """Top-k per query vector, among images under `path_prefix`, tagged with any of `tags` and passing
        `filters` (each only if given). `expand` > 0: alpha query expansion with that many neighbours (ids in
        `exclude`, e.g. the query image itself, are not used); scores are then cosines to the expanded query.
        `consistency`: a Milvus server's "Strong" waits for the next time tick (up to ~200 ms) so that every write
        acknowledged before is seen; "Bounded" (the service's choice) answers at once and sees writes within a few
        seconds. Milvus Lite answers at once either way."""
        if vectors.ndim != 2 or vectors.shape[1] != info.dim:
            raise StoreError(f"query vectors are {vectors.shape[-1]}-d but collection {info.name} holds {info.dim}-d "
                             f"vectors of {info.model}")
        flt = _filter(info, path_prefix, tags, filters)
        queries = unit(vectors)
        if expand > 0:
            queries = self._expanded(info, queries, flt, expand, alpha, exclude or set(), consistency)
        params = {"metric_type": METRIC, "params": self.search_params(info, k)}
        res = self.client.search(info.name, data=[v.tolist() for v in queries], limit=k,
                                 output_fields=_hit_fields(info), search_params=params,
                                 filter=flt, consistency_level=consistency)
        return [[_hit(h["id"], h["entity"], float(h["distance"])) for h in hits] for hits in res]

    def _expanded(self, info: CollectionInfo, queries: np.ndarray, flt: str, n: int, alpha: float,
                  exclude: set[str], consistency: str) -> np.ndarray:
        """alpha query expansion (Radenovic et al.): each query plus its n nearest images (not `exclude`d) weighted
        by similarity^alpha, re-normalised. One extra search, returning the neighbours' vectors."""
        limit = n + len(exclude)
        params = {"metric_type": METRIC, "params": self.search_params(info, limit)}
        res = self.client.search(info.name, data=[v.tolist() for v in queries], limit=limit,
                                 output_fields=["vector"], search_params=params, filter=flt,
                                 consistency_level=consistency)
        out = queries.copy()
        for qi, hits in enumerate(res):
            near = [h for h in hits if h["id"] not in exclude][:n]
            for h in near:
                w = max(float(h["distance"]), 0.0) ** alpha
                out[qi] += w * np.asarray(h["entity"]["vector"], np.float32)
        return unit(out)

    def tagged(self, info: CollectionInfo, tags: list[str], k: int, path_prefix: str | None = None,
               offset: int = 0, filters: Filters | None = None) -> list[Hit]:
        """Images tagged with any of `tags`, most confident first (score: the best matching tag's probability).
        Milvus filters, it does not rank scalars: up to MAX_TAG_CANDIDATES matches are read and sorted here."""
        if not info.has_tags:
            raise StoreError(f"collection {info.name} was indexed before images had tags; re-index it "
                             "(imgsearch index SRC --overwrite) to search by keyword")
        wanted = set(tags)
        rows = self.client.query(info.name, filter=_filter(info, path_prefix, tags, filters), limit=MAX_TAG_CANDIDATES,
                                 output_fields=_hit_fields(info))
        hits = []
        for r in rows:
            score = max((p for t, p in zip(r["tags"], r["tag_scores"]) if t in wanted), default=0.0)
            hits.append(_hit(r["id"], r, float(score)))
        hits.sort(key=lambda h: (-h.score, h.path))
        return hits[offset:offset + k]

    def search_params(self, info: CollectionInfo, k: int) -> dict:
        if info.index_type == "HNSW":
            return {"ef": max(self.hnsw_ef, k)}
        if info.index_type == "IVF_FLAT":
            return {"nprobe": ivf_nprobe(int(info.index_params.get("nlist", 1024)), self.nprobe)}
        return {}

    def get(self, info: CollectionInfo, ids: list[str], with_vectors: bool = False) -> list[dict]:
        if not ids:
            return []
        fields = ["id", "path", "width", "height", "bytes", "mtime_us"] + sorted(info.fields & {"format", "tags",
                                                                                                "tag_scores"})
        got = list(self.client.get(info.name, ids=ids, output_fields=fields + (["vector"] if with_vectors else [])))
        for row in got:  # plain lists (pymilvus gives protobuf repeated fields for arrays)
            for key in ("tags", "tag_scores"):
                if key in row:
                    row[key] = list(row[key])
        return got


# Scalar fields of a collection made today (schema 2); older ones lack format and the tags.
CURRENT_FIELDS = frozenset({"path", "width", "height", "bytes", "mtime_us", "format", "tags", "tag_scores"})
# Auto-tags per image the collection holds at most, and the longest label (ImageNet's longest is 61 characters).
MAX_TAGS = 8
MAX_TAG_LEN = 96
# Matches a keyword search reads before ranking them by tag probability (Milvus's query window: offset + limit).
MAX_TAG_CANDIDATES = 16_384


def _hit_fields(info: CollectionInfo) -> list[str]:
    return ["path", "tags", "tag_scores"] if info.has_tags else ["path"]


def _hit(id_: str, entity: dict, score: float) -> Hit:
    return Hit(id=id_, path=entity["path"], score=score, tags=tuple(entity.get("tags") or ()),
               tag_scores=tuple(round(float(p), 4) for p in entity.get("tag_scores") or ()))


def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _filter(info: CollectionInfo, path_prefix: str | None, tags: Iterable[str] | None,
            filters: Filters | None = None) -> str:
    """The Milvus boolean expression for a path prefix, a tag set and filters ("" = everything)."""
    parts = []
    if path_prefix:
        parts.append(_prefix_filter(path_prefix))
    if filters is not None:
        parts += filter_terms(info, filters)
        if tags is None:
            tags = filters.tags
    if tags is not None:
        tags = list(tags)
        if not info.has_tags:
            raise StoreError(f"collection {info.name} was indexed before images had tags; re-index it "
                             "(imgsearch index SRC --overwrite) to filter by tag")
        parts.append(f"array_contains_any(tags, [{', '.join(_lit(t) for t in tags)}])" if tags else "false")
    return " and ".join(f"({p})" for p in parts) if len(parts) > 1 else (parts[0] if parts else "")


def filter_terms(info: CollectionInfo, f: Filters) -> list[str]:
    """Filters (all but tags) as Milvus expression terms over the collection's scalar fields."""
    terms = []
    if f.folder:
        lo, hi = prefix_range(folder_uri(f.folder))
        terms.append(f"path >= {_lit(lo)} and path < {_lit(hi)}")
    if f.date_from:
        terms.append(f"mtime_us >= {micros(f.date_from)}")
    if f.date_to:
        terms.append(f"mtime_us < {micros(f.date_to)}")
    for key, fld, op in (("min_width", "width", ">="), ("min_height", "height", ">="),
                         ("max_width", "width", "<="), ("max_height", "height", "<=")):
        if getattr(f, key) is not None:
            terms.append(f"{fld} {op} {int(getattr(f, key))}")
    if f.formats:
        if "format" not in info.fields:
            raise FilterError(f"format: collection {info.name} was indexed before formats were stored; re-index it "
                              "(imgsearch index SRC --overwrite) to filter by format")
        terms.append(f"format in [{', '.join(_lit(x) for x in f.formats)}]")
    return terms


def _mtime_us(chunk: pa.Table | pa.RecordBatch) -> pa.Array | pa.ChunkedArray:
    """The dataset's `mtime` (timestamp) as the collection's `mtime_us` (microseconds since 1970, 0 where unknown)."""
    if "mtime" not in chunk.column_names:
        return pa.array(np.zeros(chunk.num_rows, np.int64))
    return pc.fill_null(chunk.column("mtime").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), 0)


def _scalars(chunk: pa.Table, fields: frozenset[str] = frozenset()) -> pa.Table:
    """Dataset rows as the collection's scalar columns (missing numbers as 0, text cut to the field sizes): the one
    conversion behind inserts through the API and bulk imports."""
    paths = chunk.column("path")
    too_long = pc.greater(pc.binary_length(paths), MAX_PATH_LEN)
    if pc.any(too_long).as_py():
        raise StoreError(f"path longer than {MAX_PATH_LEN} bytes: {paths.filter(too_long)[0].as_py()[:80]}...")

    def number(name: str, typ: pa.DataType) -> pa.ChunkedArray | pa.Array:
        col = chunk.column(name).cast(typ) if name in chunk.column_names else pa.nulls(chunk.num_rows, typ)
        return pc.fill_null(col, 0)

    cols = {"id": chunk.column("id"), "path": paths, "width": number("width", pa.int32()),
            "height": number("height", pa.int32()), "bytes": number("bytes", pa.int64()),
            "mtime_us": _mtime_us(chunk)}
    if "tags" in fields:
        cols["format"] = pa.array([(f or "")[:16] for f in _col(chunk, "format")], pa.string())
        cols["tags"] = pa.array([[t[:MAX_TAG_LEN] for t in (x or ())][:MAX_TAGS] for x in _col(chunk, "tags")],
                                pa.list_(pa.string()))
        cols["tag_scores"] = pa.array([list(x or ())[:MAX_TAGS] for x in _col(chunk, "tag_scores")],
                                      pa.list_(pa.float32()))
    return pa.table(cols)


def _rows(chunk: pa.Table, fields: frozenset[str] = frozenset()) -> list[dict]:
    """Rows for an insert through the API: the scalars, and unit vectors (the store's invariant: inner product =
    cosine)."""
    rows = _scalars(chunk, fields).to_pylist()
    for row, vector in zip(rows, unit(vectors_of(chunk))):
        row["vector"] = vector
    return rows


def _orm(fn: Callable, *args, **kwargs):
    """A pymilvus ORM call (bulk import has no MilvusClient form for Milvus 2.3), without the deprecation warning
    pymilvus prints at every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args, **kwargs)


IMPORT_FILE_BYTES = 256 * 1024 * 1024  # vector bytes per bulk-import file (one import task each)
IMPORT_ENDED = ("Completed", "Failed", "ImportFailed", "Failed and cleaned")


class BulkImport:
    """New rows of one collection, bulk-imported by a Milvus server: written as Parquet files into the store's
    import folder (which the server reads) and imported by the server's data nodes, so no row passes through the
    API. Each file is one import task, submitted as soon as it is written: the server imports while the next file
    is written. `finish()` waits for every task and removes the files; a failed task is a StoreError, and the rows
    it held are simply missing, so the next load (which first waits for unfinished imports, then reads the ids the
    collection holds) adds them."""

    def __init__(self, store: Store, name: str, dim: int):
        import uuid

        self.store, self.name = store, name
        self.file_rows = max(1, IMPORT_FILE_BYTES // (4 * dim))
        self.folder = Path(store.import_dir).expanduser().resolve() / f"imgsearch-{name}-{uuid.uuid4().hex[:12]}"
        try:
            self.folder.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"cannot write bulk-import files into {store.import_dir}: {exc}") from None
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.tasks: list[tuple[int, Path]] = []
        self.probe_ids: list[str] = []  # a few ids of each file: seen by a query once the server serves the file

    def add(self, rows: pa.Table, fields: frozenset[str]) -> None:
        for start in range(0, rows.num_rows, self.file_rows):
            chunk = rows.slice(start, self.file_rows)
            vectors = unit(vectors_of(chunk))
            offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
            self.pending.append(_scalars(chunk, fields).append_column(
                "vector", pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()))))
            self.rows += chunk.num_rows
            if self.rows >= self.file_rows:
                self._submit()

    def _submit(self) -> None:
        import pyarrow.parquet as pq
        from pymilvus import utility

        if not self.pending:
            return
        path = self.folder / f"part-{len(self.tasks):05d}.parquet"
        table = pa.concat_tables(self.pending)
        pq.write_table(table, path)
        ids = table.column("id")
        self.probe_ids += [ids[0].as_py(), ids[len(ids) // 2].as_py(), ids[-1].as_py()]
        self.pending, self.rows = [], 0
        try:
            task = _orm(utility.do_bulk_insert, self.name, files=[str(path)], using=self.store.orm_alias())
        except Exception as exc:  # noqa: BLE001 - the server's reason, e.g. a folder it cannot read
            raise StoreError(f"bulk import into {self.name} refused: {first_line(exc)}") from None
        self.tasks.append((task, path))

    def finish(self, timeout: float = 3600) -> None:
        from pymilvus import utility

        import shutil

        try:
            self._submit()
            deadline = time.monotonic() + timeout
            failed = []
            for task, path in self.tasks:
                while True:
                    state = _orm(utility.get_bulk_insert_state, task, using=self.store.orm_alias())
                    if state.state_name in IMPORT_ENDED:
                        break
                    if time.monotonic() > deadline:
                        raise StoreError(f"bulk import of {path.name} into {self.name} unfinished after {timeout:.0f} s")
                    time.sleep(0.5)
                if state.state_name != "Completed":
                    failed.append(f"{path.name}: {state.infos.get('failed_reason') or state.state_name}")
            if failed:
                raise StoreError(f"bulk import into {self.name} failed for {len(failed)} of {len(self.tasks)} files "
                                 f"(their rows are not stored; load again to add them): {failed[0]}")
            # "Completed" means stored; the query nodes load the new segments a few seconds later
            want = set(self.probe_ids)
            while len(self.store.client.get(self.name, ids=list(want), output_fields=["id"])) < len(want):
                if time.monotonic() > deadline:
                    raise StoreError(f"rows imported into {self.name} are still not searchable after {timeout:.0f} s")
                time.sleep(0.5)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _prefix_filter(prefix: str) -> str:
    """A range filter for 'path starts with prefix': exact, unlike LIKE, where '%' and '_' (common in
    percent-encoded URIs) are wildcards. A plain absolute path is turned into its file:// URI form first."""
    if prefix.startswith("/"):
        from urllib.parse import quote

        prefix = "file://" + quote(prefix, safe="/-_.~!$&'()*+,;=:@")
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"path >= {_lit(prefix)} and path < {_lit(upper)}"


def open_store(uri: str, settings: Settings, create: bool = False) -> Store:
    """Open a database with the token and HNSW parameters of `settings`."""
    return Store(uri, create=create, token=settings.milvus_token,
                 hnsw=(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef),
                 index_type=settings.index_type, flat_max_floats=settings.lite_flat_max_floats,
                 nprobe=settings.ivf_nprobe, nlist=settings.ivf_nlist, import_dir=settings.milvus_import_dir)


class CollectionRows:
    """Every row of a collection with some columns, readable again and again in one order, a batch at a time:
    what whole-collection work (duplicates, exact search, evaluation) streams so that memory stays bounded.

    Read from the embeddings dataset when it holds exactly the collection's rows (`dataset`: the folder `index`
    keeps, or one given; checked by model, dim and row count without reading vectors): fast. Otherwise pulled out
    of Milvus with a query iterator: slower, and the collection must not change meanwhile."""

    def __init__(self, store: Store, info: CollectionInfo, columns: list[str], dataset: str | Path | None = None,
                 batch: int | None = None):
        self.store, self.info, self.columns = store, info, list(columns)
        self.batch = batch or max(256, BATCH_BYTES // (4 * max(info.dim, 1)))  # ~4 MB of vectors per batch
        self.folder = Path(dataset) if dataset else None
        self.source = "milvus"
        if self.folder is not None and not info.reducer and dset.has_data(self.folder):
            summary = dset.summarize(self.folder)
            if summary.models == {info.model: info.dim} and summary.embedded == info.count:
                self.source = "dataset"

    def __len__(self) -> int:
        return self.info.count

    def __iter__(self) -> Iterator[tuple[dict[str, list], np.ndarray]]:
        """(columns as lists, float32 vectors) per batch."""
        if self.source == "dataset":  # its `mtime` is the collection's `mtime_us`
            wanted = tuple(dict.fromkeys(["mtime" if c == "mtime_us" else c for c in self.columns] + ["vector"]))
            for b in dset.iter_embedded(self.folder, batch_rows=self.batch, columns=wanted):
                yield ({c: (_mtime_us(b) if c == "mtime_us" else b.column(c)).to_pylist() for c in self.columns},
                       dset.vectors_of(b))
            return
        fields = [c for c in self.columns if c != "id"] + ["vector"]
        for rows in self.store.rows(self.info.name, fields, batch=self.batch):
            yield ({c: [r[c] for r in rows] for c in self.columns},
                   np.asarray([r["vector"] for r in rows], np.float32).reshape(len(rows), self.info.dim))

    def vectors(self) -> Iterator[np.ndarray]:
        for _, x in self:
            yield x

    def materialise(self) -> tuple[dict[str, list], np.ndarray]:
        """All rows at once, for collections small enough: the vectors are written into one preallocated array
        (never a list of batches and a concatenated copy)."""
        cols: dict[str, list] = {c: [] for c in self.columns}
        x = np.empty((len(self), self.info.dim), np.float32)
        n = 0
        for got, vecs in self:
            if n + len(vecs) > len(x):
                x = np.resize(x, (n + len(vecs), self.info.dim))  # the collection grew meanwhile (Milvus source)
            x[n:n + len(vecs)] = vecs
            n += len(vecs)
            for c in self.columns:
                cols[c] += got[c]
        return cols, x[:n]


BATCH_BYTES = 4 * 1024 * 1024
