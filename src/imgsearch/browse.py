"""Browsing the served collection: sorted, filtered pages and the folder tree, from its scalar fields held in Arrow.

Milvus filters but does not sort scalars, and a page of "newest first" needs every row's date. So the service keeps
one Arrow table of the collection's scalar fields (no vectors: ~150 bytes a row, ~150 MB at a million), read once
with a query iterator and read again when the collection's row count changes, after this process writes, or when it
is older than `max_age_s` (another process may upsert). Filters mean the same here as in searches (`filters.py`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgsearch.filters import Filters
from imgsearch.store import CollectionInfo, Store

SORTS = {"date": ("mtime_us", "descending"), "date_asc": ("mtime_us", "ascending"), "name": ("name", "ascending"),
         "size": ("pixels", "descending")}
MAX_PAGE = 200


@dataclass
class Page:
    total: int  # rows passing the filters
    rows: list[dict]


class BrowseIndex:
    def __init__(self, store: Store, max_age_s: float = 60.0):
        self.store = store
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._table: pa.Table | None = None
        self._key: tuple | None = None  # (collection, count) the table was read for
        self._at = 0.0
        self._folders: list[tuple[str, int]] | None = None
        self._refreshing = False

    def invalidate(self) -> None:
        with self._lock:
            self._key = None

    def table(self, info: CollectionInfo) -> pa.Table:
        """The current table: read now if there is none or the collection changed; if it is only old, it is served
        while a background thread reads it again (a busy page must not wait seconds every `max_age_s`)."""
        with self._lock:
            key = (info.name, info.count)
            if self._table is None or self._key != key:
                self._table = self._read(info)
                self._key, self._at, self._folders = key, time.monotonic(), None
            elif time.monotonic() - self._at > self.max_age_s and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, args=(info, key), daemon=True,
                                 name="imgsearch-browse-refresh").start()
            return self._table

    def _refresh(self, info: CollectionInfo, key: tuple) -> None:
        try:
            table = self._read(info)
            with self._lock:
                if self._key == key:  # nothing newer was read meanwhile
                    self._table, self._at, self._folders = table, time.monotonic(), None
        finally:
            self._refreshing = False

    def _read(self, info: CollectionInfo) -> pa.Table:
        fields = ["path", "mtime_us", "bytes", "width", "height"] + [f for f in ("format", "tags", "tag_scores")
                                                                    if f in info.fields]
        cols: dict[str, list] = {f: [] for f in ["id", *fields]}
        if info.count:
            for rows in self.store.rows(info.name, fields, batch=8192):
                for r in rows:
                    for f in cols:
                        v = r.get(f)
                        cols[f].append(list(v) if f in ("tags", "tag_scores") and v is not None else v)
        n = len(cols["id"])
        for f in ("format", "tags", "tag_scores"):
            if f not in cols:
                cols[f] = [None] * n
        paths = cols["path"]
        names = [p.rsplit("/", 1)[-1].lower() for p in paths]
        folders = [p.rsplit("/", 1)[0] + "/" for p in paths]
        return pa.table({
            "id": pa.array(cols["id"], pa.string()), "path": pa.array(paths, pa.string()),
            "name": pa.array(names, pa.string()), "folder": pa.array(folders, pa.string()),
            "mtime_us": pa.array(cols["mtime_us"], pa.int64()), "bytes": pa.array(cols["bytes"], pa.int64()),
            "width": pa.array(cols["width"], pa.int32()), "height": pa.array(cols["height"], pa.int32()),
            "pixels": pa.array(np.asarray(cols["width"], np.int64) * np.asarray(cols["height"], np.int64)
                               if n else [], pa.int64()),
            "format": pa.array([f or None for f in cols["format"]], pa.string()),
            "tags": pa.array(cols["tags"], pa.list_(pa.string())),
            "tag_scores": pa.array(cols["tag_scores"], pa.list_(pa.float32())),
        })

    def page(self, info: CollectionInfo, filters: Filters, sort: str = "date", offset: int = 0,
             limit: int = 60) -> Page:
        t = self.table(info)
        if filters.tags is not None:
            hit = np.zeros(t.num_rows, dtype=bool)
            flat = pc.list_flatten(t["tags"])
            if len(flat):
                parents = pc.list_parent_indices(t["tags"]).to_numpy()
                found = pc.is_in(flat, pa.array(list(filters.tags), pa.string())).to_numpy(zero_copy_only=False)
                hit[parents[found]] = True
            t = t.append_column("tag_hit", pa.array(hit))
        expr = filters.arrow()
        if expr is not None:
            t = t.filter(expr)
        column, order = SORTS[sort]
        idx = pc.sort_indices(t, sort_keys=[(column, order), ("path", "ascending")])
        picked = t.take(idx[offset:offset + limit]) if offset < t.num_rows else t.slice(0, 0)
        keep = ["id", "path", "width", "height", "bytes", "mtime_us", "format", "tags", "tag_scores"]
        return Page(total=t.num_rows, rows=picked.select(keep).to_pylist())

    def folders(self, info: CollectionInfo, parent: str | None = None) -> dict:
        """The folders under `parent` (a folder URI ending in '/'; default: the deepest folder holding every image)
        with how many images each holds at any depth, and how many lie in `parent` itself."""
        t = self.table(info)
        with self._lock:
            if self._folders is None:
                counts = t.group_by("folder").aggregate([("id", "count")])
                self._folders = sorted(zip(counts["folder"].to_pylist(), counts["id_count"].to_pylist()))
            folders = self._folders
        if parent is None:
            parent = common_folder([f for f, _ in folders])
        here, children = 0, {}
        for folder, count in folders:
            if folder == parent:
                here += count
            elif folder.startswith(parent):
                child = parent + folder[len(parent):].split("/", 1)[0] + "/"
                children[child] = children.get(child, 0) + count
        return {"folder": parent, "images_here": here, "total": here + sum(children.values()),
                "children": [{"folder": f, "images": c} for f, c in sorted(children.items())]}


def common_folder(folders: list[str]) -> str:
    """The deepest folder that every folder lies in ('' when there are none or they share no scheme)."""
    if not folders:
        return ""
    lo, hi = min(folders), max(folders)
    n = 0
    while n < min(len(lo), len(hi)) and lo[n] == hi[n]:
        n += 1
    return lo[: lo.rfind("/", 0, n) + 1] if n < len(lo) else lo
