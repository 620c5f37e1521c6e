"""Search latency of one query, as the service does it: embed the uploaded image + one vector search (k=10).

At 10,000 and 100,000 vectors (real embeddings repeated with small noise, bench/pca.py), in Milvus Lite (FLAT) and in
the `milvus-server` of the PyPI package `milvus` (HNSW, M=16, efConstruction=200, ef=64), on loopback. One query at a
time (latency, not throughput: bench/search_load.py measures load). Each collection's recall@10 against exact
search (`imgsearch eval ann`) is recorded beside its latency. The model runs with the server's setting (one
torch thread); the query images are real camera-size JPEGs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import log, percentiles, save


def _load(db: str, emb_dir: Path) -> float:
    from imgsearch import pipeline
    from imgsearch.config import get_settings

    t0 = time.perf_counter()
    pipeline.load(str(emb_dir), db, get_settings())
    return time.perf_counter() - t0


def _measure(db: str, queries: list[bytes], embedder, reps: int) -> dict:
    from imgsearch.config import get_settings
    from imgsearch.core import decode_record
    from imgsearch.sources import FileRecord
    from imgsearch.store import open_store

    s = get_settings()
    embed_s, search_s, total_s = [], [], []
    with open_store(db, s) as store:
        info = store.collection_for(None)
        store.search(info, embedder.embed(np.zeros((1, 224, 224, 3), np.uint8)), 10)  # warm-up: loads the index
        for i in range(reps):
            data = queries[i % len(queries)]
            t0 = time.perf_counter()
            out = decode_record(FileRecord("query", "q", len(data), None), data, embedder.prep, s.max_pixels)
            vec = embedder.embed(out.image.pixels[None])
            t1 = time.perf_counter()
            hits = store.search(info, vec, 10)
            t2 = time.perf_counter()
            assert len(hits[0]) == 10
            embed_s.append(t1 - t0)
            search_s.append(t2 - t1)
            total_s.append(t2 - t0)
        count, index = info.count, info.index_type
    return {"vectors": count, "index": index, "queries": reps, "total": percentiles(total_s),
            "embed": percentiles(embed_s), "search": percentiles(search_s)}


def _ann(db: str, emb_dir: Path) -> float:
    from imgsearch.config import get_settings
    from imgsearch.evaluation import run_ann

    return round(run_ann(db, get_settings(), queries=200, k=10, data=str(emb_dir)).metrics["recall@10"], 4)


def run(quick: bool = False) -> dict:
    from bench.datasets import camera_jpegs
    from bench.pca import real_embeddings, synthetic_dataset
    from imgsearch.milvus_standalone import executable, milvus_standalone
    from imgsearch.models import create_model

    sizes = [2_000] if quick else [10_000, 100_000]
    reps = 30 if quick else 300
    real = real_embeddings(256 if quick else 2048)
    embedder = create_model("efficientnet_lite0", device="cpu", precision="auto", threads=1)
    results: dict = {"k": 10, "model": "efficientnet_lite0", "precision": embedder.precision, "torch_threads": 1}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-latency-") as tmp:
        tmp = Path(tmp)
        queries = [p.read_bytes() for p in camera_jpegs(tmp / "queries", 20, seed=5)]
        for n in sizes:
            emb_dir = tmp / f"emb-{n}"
            synthetic_dataset(real, n, emb_dir)
            lite = str(tmp / f"lite-{n}.db")
            load_s = _load(lite, emb_dir)
            r = _measure(lite, queries, embedder, reps)
            r["load_s"], r["ann_recall_at_10"] = round(load_s, 1), _ann(lite, emb_dir)
            results[f"lite_{n}"] = r
            log(f"search-latency: Milvus Lite {n:,}: total p50 {r['total']['p50_ms']} ms, p99 {r['total']['p99_ms']} "
                f"ms (search p50 {r['search']['p50_ms']} ms)")
            if executable() is None:
                log("search-latency: milvus-server not installed (pip install milvus); server figures skipped")
                continue
            with milvus_standalone(tmp / f"milvus-{n}", port=19530) as uri:
                load_s = _load(uri, emb_dir)
                r = _measure(uri, queries, embedder, reps)
                r["ann_recall_at_10"] = _ann(uri, emb_dir)
            r["load_s"] = round(load_s, 1)
            results[f"server_{n}"] = r
            log(f"search-latency: milvus-server {n:,}: total p50 {r['total']['p50_ms']} ms, p99 "
                f"{r['total']['p99_ms']} ms (search p50 {r['search']['p50_ms']} ms)")
    save("search_latency", results, quick)
    return results
