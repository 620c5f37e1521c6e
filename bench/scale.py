"""imgsearch at its users' sizes: a Flickr30k-sized real corpus end to end, and a million vectors searched.

Part 1, the corpus (bench/corpus.py, >= 31,783 real images from packages):
- `imgsearch index` as a user runs it (a subprocess), with the local engine and with Spark `local-cluster[2,1,...]`:
  wall time, img/s, peak RSS per process kind (driver, Python workers, JVMs; sampled every 0.25 s), disk per image
  (Parquet + Milvus), failures; the model-only forward rate of the same images measured in the same run;
- a rerun after changing 1% of the files and deleting 1% (`--sync`), as a share of the first run's time;
- `imgsearch serve` on loopback: search latency and QPS through the HTTP API (real JPEG uploads, 16 clients).
Part 2, one million vectors. Real embeddings of 1M images are out of reach on this machine, so the vectors are
SYNTHETIC: each is a real corpus embedding plus Gaussian noise drawn in the real vectors' own PCA subspace (scaled
by its eigenvalues), so the spectrum stays real. Through the real paths: a Parquet dataset, `reduce` to 256 dims,
`load`; then per store and index: load rate, RSS, disk, single-query p50/p99, QPS with 16 concurrent clients,
recall@10 against exact search (an nprobe / ef sweep); and `duplicates` on the 1M.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import CACHE, git_rev, log, percentiles, save

# Milvus Lite at 1M vectors: PCA to this many dims keeps count x dim within its exact-search (FLAT) range
LITE_EXACT_DIMS = 96


# -- processes -----------------------------------------------------------------------------------------------------

class PeakRss:
    """Peak resident memory of a process and its descendants, by kind (python driver / python workers / java)."""

    def __init__(self, pid: int, every: float = 0.25):
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[str, int] = {}
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _kind(self, p) -> str:
        try:
            name = p.name()
        except Exception:  # noqa: BLE001 - gone
            return "other"
        if p.pid == self.root.pid:
            return "driver"
        return "jvm" if "java" in name else ("python_worker" if "python" in name else name)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except Exception:  # noqa: BLE001 - the run ended
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except Exception:  # noqa: BLE001
                    continue
                kind = self._kind(p)
                self.peaks[kind] = max(self.peaks.get(kind, 0), rss)
                total += rss
            self.total_peak = max(self.total_peak, total)
            time.sleep(every)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"peak_rss_mib_by_process_kind": {k: round(v / 2**20) for k, v in sorted(self.peaks.items())},
                "peak_rss_mib_all_processes": round(self.total_peak / 2**20)}


def run_cli(*args: str, env: dict | None = None, timeout: float = 5400) -> dict:
    """Run `imgsearch ARGS` as a user would; wall time, peak RSS per process kind, output tails."""
    cmd = [sys.executable, "-m", "imgsearch", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    rss = PeakRss(proc.pid)
    out, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    mem = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"imgsearch {' '.join(args)} failed: {err[-3000:]}")
    return {"wall_s": round(wall, 2), **mem, "stdout": out, "stderr": err}


def du_mib(*paths: Path) -> float:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


# -- part 1: the corpus --------------------------------------------------------------------------------------------

def forward_rate(src: Path, sample: int) -> float:
    """The model alone (pre-decoded crops, no I/O), as `index` runs it here (runtime auto)."""
    from bench.indexing import forward_rate as rate
    from imgsearch.config import get_settings
    from imgsearch.core import decode_record
    from imgsearch.jobs import EmbedJob
    from imgsearch.sources import list_images, read_bytes

    s = get_settings()
    emb = EmbedJob.from_settings(s, s.model, progress=False).create_embedder()
    records = list(list_images(src))
    picked = random.Random(0).sample(records, min(sample, len(records)))
    outs = [decode_record(r, read_bytes, emb.prep, s.max_pixels) for r in picked]
    crops = np.stack([o.image.pixels for o in outs if o.image is not None])
    return rate(emb, crops, s.batch_size)


def index_run(src: Path, work: Path, engine: str, master: str | None = None) -> dict:
    db = work / f"{engine}.db"
    args = ["index", str(src), "--db", str(db), "--engine", engine]
    if master:
        args += ["--master", master]
    got = run_cli(*args)
    from imgsearch.config import get_settings
    from imgsearch.layout import embeddings_root_for

    parquet = embeddings_root_for(str(db), get_settings())
    failed = run_cli("failures", "--db", str(db), "--json")
    failures = json.loads(failed["stdout"] or "[]")
    stats = json.loads(run_cli("stats", "--db", str(db), "--json")["stdout"])
    images = stats["count"] + len(failures)
    return {"engine": engine, "master": master, "images": images, "embedded": stats["count"],
            "failed": len(failures), "failure_reasons": _reasons(failures), "wall_s": got["wall_s"],
            "img_per_s": round(images / got["wall_s"], 1),
            "peak_rss_mib_by_process_kind": got["peak_rss_mib_by_process_kind"],
            "peak_rss_mib_all_processes": got["peak_rss_mib_all_processes"],
            "disk_mib": {"parquet": du_mib(parquet), "milvus": du_mib(db)},
            "disk_kib_per_image": round((du_mib(parquet) + du_mib(db)) * 1024 / max(1, images), 1),
            "db": str(db)}


def _reasons(failures: list[dict]) -> dict:
    out: dict[str, int] = {}
    for f in failures:
        key = f["error"].split(":")[0][:60]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


def churn(src: Path, share: float, seed: int = 1) -> dict:
    """Change `share` of the files (re-encoded: new bytes) and delete as many others."""
    from PIL import Image

    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = random.Random(seed)
    k = max(1, int(len(files) * share))
    picked = rng.sample(files, 2 * k)
    changed = 0
    for p in picked[:k]:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            p.unlink()  # a hard link to a package file: write a new file, never through the link
            im.save(p, "JPEG" if p.suffix.lower() in (".jpg", ".jpeg") else "PNG")
            changed += 1
        except Exception:  # noqa: BLE001 - an image Pillow cannot open stays as it is
            continue
    for p in picked[k:]:
        p.unlink()
    return {"changed": changed, "deleted": k}


def serve_load(db: str, seconds: float, clients: int = 16) -> dict:
    """`imgsearch serve` in its own process; closed-loop search requests (real JPEG uploads) from this one."""
    from urllib.parse import urlparse

    from bench.search_load import _multipart, closed_loop
    from imgsearch.samples import sample_photo_files, write_variants
    from imgsearch.server.live import live_server

    with tempfile.TemporaryDirectory() as tmp:
        made = write_variants(sample_photo_files()[:8], Path(tmp), kinds=("crop80", "jpeg40"))
        queries = [_multipart(p.read_bytes(), p.name) for copies in made.values() for p in copies]
    t0 = time.perf_counter()
    with live_server(db, timeout=300) as url:
        startup = time.perf_counter() - t0  # until /healthz answers
        port = urlparse(url).port
        one = closed_loop("127.0.0.1", port, queries, 1, 60, seconds / 2)
        many = closed_loop("127.0.0.1", port, queries, clients, 100_000, seconds / 2)
    return {"startup_s": round(startup, 1), "one_client": one, f"{clients}_clients": many}


def index_with_flatness(src: Path, work: Path, share: int = 8) -> tuple[dict, dict]:
    """`index` of the corpus with the local engine, after one of every `share`-th file: peak RSS of the two runs
    shows whether memory grows with the number of images (it must not: every stage streams)."""
    sub = work / "corpus-subset"
    files = sorted(f for f in src.rglob("*") if f.is_file())
    for f in files[::share]:
        dst = sub / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dst)
    small = index_run(sub, work / "subset", "local")
    local = index_run(src, work, "local")
    flat = {key: {"images": r["images"], "peak_rss_mib_driver": r["peak_rss_mib_by_process_kind"]["driver"],
                  "wall_s": r["wall_s"], "img_per_s": r["img_per_s"]}
            for key, r in (("subset", small), ("full", local))}
    flat["full_over_subset"] = round(flat["full"]["peak_rss_mib_driver"] / flat["subset"]["peak_rss_mib_driver"], 3)
    return flat, local


def corpus_copy(quick: bool, work: Path) -> tuple[dict, Path]:
    """The benchmark corpus (built once into the cache), hard-linked into `work`: the churn of the 1% rerun
    replaces files, never edits them, so the cache stays intact."""
    from bench.corpus import FLICKR30K, build

    target = 160 if quick else FLICKR30K
    src_cache = CACHE / f"corpus-{target}"
    composition = build(src_cache, target=target, limit_per_source=20 if quick else None)
    src = work / "corpus"
    shutil.copytree(src_cache, src, copy_function=os.link)
    return composition, src


def real_corpus_index(quick: bool, work: Path) -> tuple[dict, Path]:
    """A local index of the corpus for the million part's real vectors when the corpus part's is gone; its peak
    RSS against a subset's is kept too."""
    _, src = corpus_copy(quick, work)
    flat, local = index_with_flatness(src, work)
    return flat, Path(local["db"])


def corpus_part(quick: bool, work: Path) -> tuple[dict, Path]:
    master = "local[2]" if quick else "local-cluster[2,1,3072]"  # quick: no cluster start-up
    composition, src = corpus_copy(quick, work)
    log(f"scale: corpus {composition['total']}")
    fwd_before = forward_rate(src, 64 if quick else 512)
    flat, local = index_with_flatness(src, work)
    log(f"scale: local engine {local['images']} images in {local['wall_s']} s ({local['img_per_s']} img/s)")
    fwd_after = forward_rate(src, 64 if quick else 512)
    forward = (fwd_before + fwd_after) / 2
    local["over_forward_ratio"] = round(local["img_per_s"] / forward, 3)
    figures: dict = {"corpus": composition, "forward_img_per_s": round(forward, 1),
                     "forward_before_after": [round(fwd_before, 1), round(fwd_after, 1)], "local": local,
                     "rss_flatness": flat}
    changes = churn(src, 0.01)
    rerun = run_cli("index", str(src), "--db", local["db"], "--sync")
    figures["rerun_1pct"] = {**changes, "wall_s": rerun["wall_s"],
                             "share_of_first_run": round(rerun["wall_s"] / local["wall_s"], 4),
                             "peak_rss_mib_all_processes": rerun["peak_rss_mib_all_processes"]}
    log(f"scale: 1% rerun {rerun['wall_s']} s = {figures['rerun_1pct']['share_of_first_run']:.1%} of the first run")
    figures["serve"] = serve_load(local["db"], 4 if quick else 60)
    spark = index_run(src, work, "spark", master)
    spark["over_local_ratio"] = round(spark["wall_s"] / local["wall_s"], 3)
    figures["spark"] = spark
    log(f"scale: Spark {master}: {spark['wall_s']} s ({spark['img_per_s']} img/s)")
    return figures, Path(local["db"])


# -- part 2: a million vectors -------------------------------------------------------------------------------------

def synthesize(real: np.ndarray, n: int, out: Path, noise: float = 1.0, seed: int = 0) -> dict:
    """n unit vectors: real rows + Gaussian noise in the real rows' PCA subspace (scaled by sqrt eigenvalues),
    written as an embeddings dataset (the format `index` keeps)."""
    from datetime import datetime, timezone

    from imgsearch import dataset as dset
    from imgsearch.vectors import unit

    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    cov = np.cov((real - mean).T)
    eig, vec = np.linalg.eigh(cov)
    keep = eig > eig.max() * 1e-6
    basis = (vec[:, keep] * np.sqrt(eig[keep])).T.astype(np.float32)  # (k, d)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    model, dim = "efficientnet_lite0", real.shape[1]
    step = 20_000
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        base = real[rows % len(real)]
        z = rng.standard_normal((len(rows), basis.shape[0])).astype(np.float32)
        x = unit(base + noise * (z @ basis))
        cols = {"id": [f"{i:032x}" for i in rows], "path": [f"file:///synthetic/{i}.jpg" for i in rows],
                "model": [model] * len(rows), "dim": [dim] * len(rows), "bytes": [100_000] * len(rows),
                "mtime": [t0] * len(rows), "width": [640] * len(rows), "height": [480] * len(rows),
                "format": ["JPEG"] * len(rows), "error": [None] * len(rows)}
        dset.write_part(dset.to_table(cols, list(x)), out)
        if start == 0:
            cos = float(np.mean(np.sum(x * unit(base), axis=1)))
    return {"noise_scale": noise, "pca_components": int(keep.sum()), "cosine_to_its_real_vector_mean": round(cos, 3)}


def real_vectors(db: Path) -> np.ndarray:
    from imgsearch import dataset as dset
    from imgsearch.config import get_settings
    from imgsearch.layout import embeddings_dir_for

    folder = embeddings_dir_for(str(db), "efficientnet_lite0", get_settings())
    return np.concatenate([dset.vectors_of(b) for b in dset.iter_embedded(folder, columns=("vector",))])


def search_figures(uri: str, settings, queries: np.ndarray, exact_ids: list[list[str]], sweep: dict,
                   seconds: float) -> list[dict]:
    """Per search setting: single-query p50/p99, QPS with 16 concurrent clients, recall@10 against exact."""
    from imgsearch.store import open_store
    from imgsearch.vectors import overlap_recall

    rows = []
    for name, value in sweep.items():
        s = settings.model_copy(update={name: value}) if name else settings  # "" : the settings as they are
        with open_store(uri, s) as store:
            [info] = store.collections()
            lat, found = [], []
            for q in queries:
                t0 = time.perf_counter()
                hits = store.search(info, q[None], 10)[0]
                lat.append(time.perf_counter() - t0)
                found.append([h.id for h in hits])
            recall = overlap_recall(found, exact_ids, 10)
            done = 0
            lock = threading.Lock()
            deadline = time.perf_counter() + seconds

            def client(c: int) -> None:
                nonlocal done
                i = c
                while time.perf_counter() < deadline:
                    store.search(info, queries[i % len(queries)][None], 10)
                    i += 16
                    with lock:
                        done += 1

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(client, range(16)))
            qps = done / (time.perf_counter() - t0)
            rows.append({"param": name, "value": value, "index": info.index_type, "index_params": info.index_params,
                         "search_params": store.search_params(info, 10), **percentiles(lat),
                         "qps_16_clients": round(qps, 1), "recall_at_10": round(recall, 4)})
            log(f"scale: {uri[-30:]} {info.index_type} {rows[-1]['search_params']}: p50 {rows[-1]['p50_ms']} ms, "
                f"p99 {rows[-1]['p99_ms']} ms, {rows[-1]['qps_16_clients']} q/s, recall@10 {recall:.4f}")
    return rows


def timed_load(data: Path, uri: str, settings, wait_index_s: float = 3600) -> dict:
    from imgsearch import pipeline
    from imgsearch.store import open_store

    import psutil

    rss0 = psutil.Process().memory_info().rss
    rss = PeakRss(os.getpid())
    t0 = time.perf_counter()
    rep = pipeline.load(str(data), uri, settings)
    wall = time.perf_counter() - t0
    mem = rss.stop()
    n = sum(rep.counts.values())
    with open_store(uri, settings) as store:
        [info] = store.collections()
        build_s = None
        if not store.is_lite:  # a server builds its index after the load returns: measure searches on the index
            t1 = time.perf_counter()
            while time.perf_counter() - t1 < wait_index_s:
                done, total = store.index_progress(info.name)
                if total and done >= total:
                    break
                time.sleep(2)
            build_s = round(time.perf_counter() - t1, 1)
            log(f"scale: server index {done}/{total} rows built {build_s} s after the load")
    return {"vectors": n, "dim": info.dim, "load_s": round(wall, 1), "load_vectors_per_s": round(n / wall),
            "index_build_after_load_s": build_s,
            "index": info.index_type, "index_params": info.index_params,
            "peak_rss_mib_this_process_and_children": mem["peak_rss_mib_all_processes"],
            "rss_mib_before": round(rss0 / 2**20)}


def million_part(quick: bool, work: Path, real: np.ndarray, checkpoint=lambda figures: None) -> dict:
    from imgsearch import pipeline
    from imgsearch.config import get_settings
    from imgsearch.milvus_standalone import executable, milvus_standalone
    from imgsearch.store import open_store
    from imgsearch.vectors import take_rows, top_k_streamed

    n = 5_000 if quick else 1_000_000
    s = get_settings()
    full = work / "synthetic-1280"
    made = synthesize(real, n, full)
    t0 = time.perf_counter()
    red = pipeline.reduce(str(full), str(work / "synthetic-256"), s, dims=256)
    figures: dict = {"vectors": n, "synthetic": "real corpus embeddings + noise in their PCA subspace", **made,
                     "real_vectors": len(real), "reduce_s": round(time.perf_counter() - t0, 1),
                     "reduce_recall_at_10": red.reducer.quality}
    log(f"scale: {n} synthetic vectors; reduce to 256 in {figures['reduce_s']} s")
    reduced = work / "synthetic-256"
    rng = np.random.default_rng(5)
    q_rows = np.sort(rng.choice(n, size=100 if quick else 200, replace=False))

    def queries_and_truth(folder: Path, dim: int) -> tuple[np.ndarray, list[list[str]]]:
        from imgsearch import dataset as dset

        ids, qx = [], np.empty((len(q_rows), dim), np.float32)
        for b in dset.iter_embedded(folder, columns=("id", "vector")):
            take_rows(qx, q_rows, len(ids), dset.vectors_of(b))
            ids += b.column("id").to_pylist()
        qx += np.random.default_rng(6).standard_normal(qx.shape).astype(np.float32) * 0.02  # not the stored rows
        vecs = (dset.vectors_of(b) for b in dset.iter_embedded(folder, columns=("vector",)))
        exact = top_k_streamed(qx, vecs, 10)
        return qx, [[ids[j] for j in row] for row in exact]

    q256, truth256 = queries_and_truth(reduced, red.reducer.k)
    checkpoint(figures)
    seconds = 1 if quick else 15
    lite = work / "lite-256.db"
    figures["lite_pca256"] = {**timed_load(reduced, str(lite), s), "disk_mib": du_mib(lite)}
    nprobes, efs = ((16,), (64,)) if quick else ((16, 64, 256, 1024), (16, 24, 32, 48, 64, 128, 256))
    lite_rows = search_figures(str(lite), s, q256, truth256, {"": None}, seconds)  # the index auto chose
    ivf = s.model_copy(update={"index_type": "IVF_FLAT"})
    flat = s.model_copy(update={"index_type": "FLAT"})

    def rebuild(settings) -> None:  # the other Lite index, rebuilt in place
        with open_store(str(lite), settings) as store:
            [info] = store.collections()
            t0 = time.perf_counter()
            store.fit_index(info.name, info.dim)
            figures["lite_pca256"][f"rebuild_{settings.index_type.lower()}_s"] = round(time.perf_counter() - t0, 1)

    def sweep() -> None:  # IVF_FLAT at several nprobe: the recall/latency trade the default is chosen from
        for p in nprobes:
            lite_rows.extend(search_figures(str(lite), ivf, q256, truth256, {"ivf_nprobe": p}, seconds))
            checkpoint({**figures, "lite_pca256": {**figures["lite_pca256"], "search": lite_rows}})

    if figures["lite_pca256"]["index"] == "IVF_FLAT":
        sweep()
        rebuild(flat)
        lite_rows += search_figures(str(lite), flat, q256, truth256, {"": None}, seconds)
    else:
        rebuild(ivf)
        sweep()
    figures["lite_pca256"]["search"] = lite_rows
    checkpoint(figures)
    # PCA to fewer dims: a million rows within Lite's exact-search range, searched with the index auto chooses
    t0 = time.perf_counter()
    reduced_x = work / f"synthetic-{LITE_EXACT_DIMS}"
    red_x = pipeline.reduce(str(full), str(reduced_x), s, dims=LITE_EXACT_DIMS)
    reduce_x_s = round(time.perf_counter() - t0, 1)
    q_x, truth_x = queries_and_truth(reduced_x, red_x.reducer.k)
    lite_x = work / f"lite-{LITE_EXACT_DIMS}.db"
    figures["lite_exact"] = {**timed_load(reduced_x, str(lite_x), s), "disk_mib": du_mib(lite_x),
                             "reduce_s": reduce_x_s, "reduce_recall_at_10": red_x.reducer.quality}
    figures["lite_exact"]["search"] = search_figures(str(lite_x), s, q_x, truth_x, {"": None}, seconds)
    shutil.rmtree(reduced_x)
    checkpoint(figures)
    if executable() is not None:
        with milvus_standalone(work / "milvus-server", port=19530) as uri:
            # the load as a user with a server on this machine runs it: new rows bulk-imported from Parquet files
            bulk = s.model_copy(update={"milvus_import_dir": str(work / "milvus-imports")})
            srv = {**timed_load(reduced, uri, bulk, 120 if quick else 3600), "load_method": "bulk import",
                   "disk_mib": du_mib(work / "milvus-server")}
            srv["search"] = []
            figures["server_hnsw_pca256"] = srv
            for ef in efs:
                srv["search"] += search_figures(uri, s, q256, truth256, {"hnsw_ef": ef}, seconds)
                checkpoint(figures)
            # the same server and data through the API (inserts), on the first parts, for the ratio of the two
            with open_store(uri, s) as store:
                store.drop(store.collections()[0].name)
            head = work / "synthetic-256-head"
            head.mkdir()
            parts = sorted(p for p in reduced.iterdir() if p.suffix == ".parquet")
            for p in parts[:max(1, len(parts) // 5)]:
                os.link(p, head / p.name)
            if (reduced / "_reducer").exists():  # the reducer the collection is named by
                os.symlink(reduced / "_reducer", head / "_reducer")
            t0 = time.perf_counter()
            rep = pipeline.load(str(head), uri, s)
            n_head = sum(rep.counts.values())
            srv["insert_load"] = {"vectors": n_head, "load_s": round(time.perf_counter() - t0, 1),
                                  "load_vectors_per_s": round(n_head / (time.perf_counter() - t0))}
            srv["bulk_over_insert_rate"] = round(srv["load_vectors_per_s"] / srv["insert_load"]["load_vectors_per_s"], 2)
            log(f"scale: server load by inserts {srv['insert_load']}; bulk import x{srv['bulk_over_insert_rate']}")
            figures["server_hnsw_pca256"] = srv
            checkpoint(figures)
    # duplicates over the full-width million (exact would be O(n^2 d)): the ANN path, its recall on a sample
    t0 = time.perf_counter()
    dup = duplicates_on(full, s)
    figures["duplicates_1280"] = {**dup, "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"scale: duplicates on {n} x 1280: {figures['duplicates_1280']}")
    return figures


def duplicates_on(folder: Path, settings) -> dict:
    """`duplicates`' ANN search over a dataset folder (no collection needed: the same function the CLI runs)."""
    from imgsearch import dataset as dset
    from imgsearch.duplicates import DEFAULT_THRESHOLD, find_links_ann

    summary = dset.summarize(folder)
    (_, dim), = summary.models.items()
    batches = lambda: (dset.vectors_of(b) for b in dset.iter_embedded(folder, batch_rows=1024,  # noqa: E731
                                                                      columns=("vector",)))
    links = find_links_ann(batches, summary.embedded, dim, DEFAULT_THRESHOLD, nprobe=settings.duplicates_nprobe)
    return {"links": len(links.i), **links.stats}


def run(quick: bool = False) -> dict:
    """Both parts; IMGSEARCH_BENCH_SCALE_PARTS=corpus (or million) runs one, keeping the other's last figures
    (the million part then takes its real vectors from the corpus part's index, which must still exist)."""
    parts = os.environ.get("IMGSEARCH_BENCH_SCALE_PARTS", "corpus,million").split(",")
    work = Path(tempfile.mkdtemp(prefix="imgsearch-bench-scale-", dir=os.environ.get("IMGSEARCH_BENCH_TMP")))
    from bench.common import RESULTS

    path = RESULTS.with_name("results-quick.json") if quick else RESULTS
    old = json.loads(path.read_text()).get("sections", {}).get("scale", {}) if path.exists() else {}
    figures = {k: old[k] for k in ("corpus_part", "million_part") if k in old}
    try:
        if "corpus" in parts:
            figures["corpus_part"], db = corpus_part(quick, work)
            save("scale", figures, quick)
        else:
            db = Path(figures["corpus_part"]["local"]["db"])
            if "million" in parts and not db.exists():
                log(f"scale: {db} is gone: indexing the corpus again for its real vectors")
                flat, db = real_corpus_index(quick, work)
                figures["corpus_part"]["rss_flatness"] = {**flat, "git": git_rev()}
                save("scale", figures, quick)
        if "million" in parts:
            def checkpoint(part: dict) -> None:  # a long run keeps what it measured so far
                save("scale", {**figures, "million_part": {**part, "incomplete": True}}, quick)

            figures["million_part"] = million_part(quick, work, real_vectors(db), checkpoint)
            save("scale", figures, quick)
        return figures
    finally:
        if "million" in parts:  # the corpus part's index is kept for a later million-only run
            shutil.rmtree(work, ignore_errors=True)
