"""Fault injection for resumability: kill -9 a real `imgsearch index` at random moments, rerun it to completion, and
compare with a clean run. The test suite and `python -m bench kill-resume` both drive it; an operator can point it
at a sample of their own data.

Each cycle starts `imgsearch index` in its own process group, SIGKILLs the whole group (CLI, Milvus Lite, Spark JVM
and workers) after a random delay, and counts the rows the dataset holds. Every engine appends "batch <pid> <n>" to
the work log (Settings.worker_log) after each model batch, so the images embedded by runs that were then killed are
counted: work redone = all rows embedded by all runs - rows in the final dataset.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from imgsearch import catalog
from imgsearch import dataset as dset
from imgsearch.buckets import BucketConfig
from imgsearch.config import Settings
from imgsearch.layout import embeddings_dir_for
from imgsearch.store import open_store


def _index_cmd(src: str | Path, db: Path, engine: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "imgsearch", "index", str(src), "--db", str(db), "--engine", engine, *extra]


def logged_rows(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(int(line.split()[2]) for line in log.read_text().splitlines() if line.startswith("batch "))


def kill_cycles(src: str | Path, work: Path, *, total: int, kills: int, seed: int, engine: str = "local",
                extra: list[str] | None = None, env: dict[str, str] | None = None, model: str = "efficientnet_lite0",
                startup: tuple[float, float] = (0.2, 3.0), max_attempts: int | None = None,
                out: str | None = None, buckets: BucketConfig | None = None) -> dict:
    """Run `index` with SIGKILLs until `kills` runs were killed, then once more to completion; compare with a clean
    run. Returns the figures (callers assert). `out`: keep the datasets there (`<out>/killed`, `<out>/clean`; a
    bucket prefix is reached with `buckets`) instead of beside the databases.

    Moments are random in what the run is doing: each cycle draws a number of rows r in [0, rows left]; r = 0 kills
    at a random time in `startup` (imports, listing, model load, or the Milvus phase of a run with nothing left to
    embed); otherwise the run is killed once it has embedded r more rows, plus a random 0-300 ms (inside a
    commit, between batches, or in the Milvus phase after the last batch).
    """
    settings = Settings()  # the layout the child processes use (same environment)
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    db, clean_db, log = work / "killed.db", work / "clean.db", work / "work.log"
    full_env = {**os.environ, **(env or {}), "IMGSEARCH_WORKER_LOG": str(log)}
    emb = dset.locate(f"{out}/killed" if out else embeddings_dir_for(str(db), model, settings), buckets)
    clean_emb = dset.locate(f"{out}/clean" if out else embeddings_dir_for(str(clean_db), model, settings), buckets)
    extra_killed = [*(extra or []), *(["--out", emb.uri] if out else [])]
    extra_clean = [*(extra or []), *(["--out", clean_emb.uri] if out else [])]
    cycles, attempts = [], 0
    while sum(c["killed"] for c in cycles) < kills and attempts < (max_attempts or kills * 3):
        attempts += 1
        left = total - len(set(catalog.read_state(emb).ids))
        target = rng.randint(0, left)
        at_start = logged_rows(log)
        proc = subprocess.Popen(_index_cmd(src, db, engine, extra_killed), env=full_env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.perf_counter()
        if target == 0:
            deadline = started + rng.uniform(*startup)
        else:
            deadline = None
            while proc.poll() is None and logged_rows(log) - at_start < target:
                time.sleep(0.02)
            deadline = time.perf_counter() + rng.uniform(0, 0.3)
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _reap_group(proc.pid)
        committed = len(set(catalog.read_state(emb).ids))
        cycles.append({"target_rows": target, "after_s": round(time.perf_counter() - started, 2), "killed": killed,
                       "rows_committed": committed, "rows_embedded_so_far": logged_rows(log),
                       "returncode": None if killed else proc.returncode})
    t0 = time.perf_counter()
    final = subprocess.run(_index_cmd(src, db, engine, extra_killed), env=full_env, capture_output=True, text=True)
    final_s = time.perf_counter() - t0
    done_rows = logged_rows(log)
    clean_env = {**os.environ, **(env or {})}
    clean = subprocess.run(_index_cmd(src, clean_db, engine, extra_clean), env=clean_env, capture_output=True,
                           text=True)
    out = {"engine": engine, "kills": sum(c["killed"] for c in cycles), "attempts": attempts, "cycles": cycles,
           "final_returncode": final.returncode, "final_stderr": final.stderr[-2000:], "final_s": round(final_s, 2),
           "clean_returncode": clean.returncode, "clean_stderr": clean.stderr[-2000:]}
    if final.returncode or clean.returncode:
        return out
    got, want = _store_state(db, settings), _store_state(clean_db, settings)
    rows = catalog.read_state(emb)
    out.update({
        "ids_equal_clean_run": set(got["ids"]) == set(want["ids"]),
        "milvus_count": got["count"], "milvus_unique_ids": len(set(got["ids"])), "clean_count": want["count"],
        "dataset_rows": len(rows.ids), "dataset_unique_ids": len(set(rows.ids)),
        "rows_embedded_total": done_rows,
        "rows_redone": done_rows - len(rows.ids),
        "min_cosine_vs_clean": _min_cosine(emb, clean_emb),
    })
    out["rows_redone_per_kill"] = round(out["rows_redone"] / max(out["kills"], 1), 1)
    return out


def _reap_group(pgid: int) -> None:
    """Wait until every process of the killed group is gone (Milvus Lite must release the database file)."""
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _store_state(db: Path, settings: Settings) -> dict:
    with open_store(str(db), settings) as store:
        info = store.collection_for(None)
        keys = store.file_keys(info.name)
        return {"ids": list(keys), "count": store.count(info.name)}


def dataset_vectors(folder: "Path | dset.Location", key: str = "id") -> dict[str, np.ndarray]:
    """Every embedded vector of a dataset folder by its `key` column (id or path): for comparing two runs."""
    out = {}
    for batch in dset.iter_embedded(folder, columns=(key, "vector")):
        for k, v in zip(batch.column(key).to_pylist(), dset.vectors_of(batch)):
            out[k] = v
    return out


def _min_cosine(a: "Path | dset.Location", b: "Path | dset.Location") -> float:
    va, vb = dataset_vectors(a), dataset_vectors(b)
    common = sorted(set(va) & set(vb))
    if not common:
        return float("nan")
    return float(min(np.dot(va[i], vb[i]) for i in common))
