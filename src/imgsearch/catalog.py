"""What an embeddings folder already holds, and what a rerun must do: the state behind incremental, resumable runs.

The Parquet dataset an engine writes is the record of completed work. Each part file is committed whole (temp name,
then rename; one finished upload in a bucket; Spark's task commit for the Spark engine), so after a crash or `kill -9`
the folder holds every finished part and nothing half-written. A rerun lists the source again and compares each file
with its row:

* a file is *done* when the dataset has a row for its id with the same size and modification time (to the
  millisecond, what every Hadoop file system reports). Path + size + mtime rather than a content hash: deciding must
  not read every byte of a large collection again (make and rsync decide the same way); a rewrite that keeps both size
  and mtime goes unnoticed, and `--overwrite` rebuilds from scratch;
* everything else (new, changed; failed ones only with `retry_failed`) is embedded again;
* ids under the source that are no longer listed are *removed*, if the user asked to sync.

After a complete run `compact` rewrites the few parts that hold rows no longer current (old versions of changed files,
removed files, duplicates a crash may have left), so a finished dataset holds exactly one row per file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imgsearch import dataset as dset
from imgsearch.errors import DatasetError
from imgsearch.sources import FileRecord

Key = tuple[int | None, int | None]  # (size in bytes, mtime in ms)


def file_key(size: int | None, mtime_us: int | None) -> Key:
    return size, (None if mtime_us is None else mtime_us // 1000)


def record_key(rec: FileRecord) -> Key:
    mt = None if rec.mtime is None else int(rec.mtime.timestamp() * 1_000_000 + 0.5)
    return file_key(rec.size, mt)


@dataclass
class State:
    """The rows of a dataset without their vectors: enough to decide what a rerun must do."""

    ids: list[str]
    paths: list[str]
    keys: list[Key]
    failed: list[bool]
    parts: list[int]  # index into part_paths
    part_paths: list[str]  # in the location's file system
    models: set[str]
    location: dset.Location | None = None

    def current(self, root: str | None = None) -> dict[str, tuple[Key, bool]]:
        """id -> (key, failed) of its newest row (parts are read newest first); only files under `root` if given."""
        out: dict[str, tuple[Key, bool]] = {}
        for fid, path, key, failed in zip(self.ids, self.paths, self.keys, self.failed):
            if root is None or under(path, root):
                out.setdefault(fid, (key, failed))
        return out


def read_state(folder: "str | os.PathLike[str] | dset.Location") -> State:
    """Every row's id, path, (size, mtime) and outcome, parts read newest first (so the newest row of an id wins)."""
    loc = dset.locate(folder)
    infos = dset.part_infos(loc, missing_ok=True)
    # newest first: modification time, then name (ours sort in commit order; a bucket's times have whole seconds)
    infos.sort(key=lambda i: (i.mtime_ns or 0, i.base_name), reverse=True)
    parts = [i.path for i in infos]
    st = State([], [], [], [], [], parts, set(), loc)
    for i, part in enumerate(parts):
        try:
            t = pq.read_table(part, columns=["id", "path", "bytes", "mtime", "error", "model"], filesystem=loc.fs)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{part}: unreadable part file ({exc}); delete it and run again") from None
        mt = t.column("mtime").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        st.ids += t.column("id").to_pylist()
        st.paths += t.column("path").to_pylist()
        st.keys += [file_key(b, m) for b, m in zip(t.column("bytes").to_pylist(), mt)]
        st.failed += pc.is_valid(t.column("error")).to_pylist()
        st.parts += [i] * t.num_rows
        st.models.update(m for m in pc.unique(t.column("model")).to_pylist() if m is not None)
    return st


def under(uri: str, root: str) -> bool:
    return uri == root or uri.startswith(root.rstrip("/") + "/")


@dataclass
class Plan:
    """What this run embeds, and what it found already done."""

    todo: list[FileRecord]
    listed: dict[str, Key]  # id -> key of every file listed this time
    root: str  # the source as a URI; `removed` holds only ids under it
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    retried: int = 0
    failed_unchanged: int = 0  # failed before, unchanged since: not retried
    removed: list[tuple[str, str]] = field(default_factory=list)  # (id, uri) no longer in the source
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed: nothing under them is removed


def plan_run(records: list[FileRecord], state: State, root: str, *, retry_failed: bool = False,
             unlisted: list[str] | None = None) -> Plan:
    current = state.current()
    # A file is done if any of its rows matches it (a crash may leave an old and a new row side by side); the newest
    # matching row says whether it failed.
    done: dict[tuple[str, Key], bool] = {}
    for fid, key, failed in zip(state.ids, state.keys, state.failed):
        done.setdefault((fid, key), failed)
    plan = Plan(todo=[], listed={}, root=root, unlisted=list(unlisted or []))
    for rec in records:
        key = record_key(rec)
        plan.listed[rec.id] = key
        prev = current.get(rec.id)
        if prev is None:
            plan.new += 1
            plan.todo.append(rec)
        elif (rec.id, key) not in done:
            plan.changed += 1
            plan.todo.append(rec)
        elif done[(rec.id, key)]:
            if retry_failed:
                plan.retried += 1
                plan.todo.append(rec)
            else:
                plan.failed_unchanged += 1
        else:
            plan.unchanged += 1
    seen = set()
    for fid, path in zip(state.ids, state.paths):
        if fid in seen or fid in plan.listed:
            continue
        seen.add(fid)
        if under(path, root) and not any(under(path, u) for u in plan.unlisted):
            plan.removed.append((fid, path))
    return plan


@dataclass
class CompactReport:
    dropped: int = 0
    rewritten: int = 0


def compact(folder: "str | os.PathLike[str] | dset.Location", plan: Plan, *, sync: bool) -> CompactReport:
    """Rewrite the parts holding rows that are no longer current, keeping one row per file.

    A row is dropped if it is an older version of a listed file, a duplicate, or (with `sync`) a file gone from the
    source. Each rewritten part is written whole under a new name before the old one is deleted: a crash in between
    leaves a duplicate, which the next run drops.
    """
    state = read_state(folder)
    removed = {fid for fid, _ in plan.removed} if sync else set()
    keep_row: list[bool] = []
    kept: set[str] = set()
    for i, fid in enumerate(state.ids):
        want = plan.listed.get(fid)
        ok = fid not in kept and fid not in removed and (want is None or state.keys[i] == want)
        keep_row.append(ok)
        if ok:
            kept.add(fid)
    rep = CompactReport()
    by_part: dict[int, list[bool]] = {}
    for part, k in zip(state.parts, keep_row):
        by_part.setdefault(part, []).append(k)
    for part, flags in by_part.items():
        if all(flags):
            continue
        path, loc = state.part_paths[part], state.location
        rep.dropped += flags.count(False)
        rep.rewritten += 1
        if any(flags):
            table = pq.read_table(path, filesystem=loc.fs)
            dset.write_part(table.filter(pa.array(flags)), os.path.dirname(path) if loc.is_local else loc)
        loc.fs.delete_file(path)
    return rep


class FolderLock:
    """One writer per embeddings folder (an advisory lock the OS drops when the process dies, even by kill -9).

    A bucket holds no locks: a dataset there is locked on this machine only (a file named after its URI in the temp
    folder), so two jobs on one machine cannot interleave; jobs on two machines writing one prefix are the user's to
    avoid (README)."""

    NAME = ".imgsearch.lock"

    def __init__(self, folder: "str | os.PathLike[str] | dset.Location"):
        loc = dset.locate(folder)
        if loc.is_local:
            self.path = Path(loc.path) / self.NAME
            self.name = loc.path
        else:
            digest = hashlib.sha256(loc.uri.encode()).hexdigest()[:24]
            self.path = Path(tempfile.gettempdir()) / "imgsearch-locks" / f"{digest}.lock"
            self.name = loc.uri
        self._local = loc.is_local
        self._fh = None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise DatasetError(f"{self.name} is being written by another imgsearch job; wait for it to end") from None
        if self._local:
            for stale in self.path.parent.glob(".part-*.tmp"):  # left by a job that was killed mid-write
                stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
