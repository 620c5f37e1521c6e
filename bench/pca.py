"""PCA benchmark: fit time on 100,000 x 1,280 vectors, and recall@10 of reduced vs full-dim search on real images.

Real vectors: embeddings of the benchmark image set (openclipart PNGs + camera-size photo JPEGs, bench/datasets.py).
Fit-time vectors: those real vectors repeated with small noise up to 100,000 rows, streamed as a Parquet dataset
through `imgsearch reduce` (the fit alone is also timed from in-memory batches).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import CACHE, log, save
from bench.datasets import indexing_set


def real_embeddings(n: int) -> np.ndarray:
    from imgsearch import dataset as dset
    from imgsearch import pipeline
    from imgsearch.config import get_settings

    src = indexing_set(CACHE / f"indexing-{n}", n, photo_share=0.0625 if n > 4096 else 0.25)
    out = CACHE / f"embeddings-{n}"
    if not dset.has_data(out):
        log(f"pca: embedding {n} images (cached for later runs)")
        pipeline.embed(str(src), str(out), "efficientnet_lite0", get_settings(), progress=False, overwrite=True)
    return np.concatenate([dset.vectors_of(b) for b in dset.iter_embedded(out, columns=("vector",))])


def synthetic_dataset(real: np.ndarray, rows: int, folder: Path) -> None:
    from imgsearch import dataset as dset

    rng = np.random.default_rng(0)
    now = datetime.now(timezone.utc)
    for start in range(0, rows, 10_000):
        n = min(10_000, rows - start)
        v = real[rng.integers(0, len(real), n)] + rng.standard_normal((n, real.shape[1])).astype(np.float32) * 0.02
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cols = dset.empty_columns()
        for i in range(n):
            uri = f"file:///bench/pca/{start + i:07d}.jpg"
            cols["id"].append(f"{start + i:032x}")
            cols["path"].append(uri)
            for name, val in (("model", "efficientnet_lite0"), ("dim", 1280), ("width", 640), ("height", 480),
                              ("bytes", 1), ("mtime", now), ("format", "JPEG"), ("error", None)):
                cols[name].append(val)
        dset.write_part(dset.to_table(cols, list(v)), folder)


def run(quick: bool = False) -> dict:
    from imgsearch import pipeline
    from imgsearch.config import get_settings
    from imgsearch.reduce import fit_batches, recall_at_k

    n_real = 256 if quick else 8192
    rows = 5_000 if quick else 100_000
    real = real_embeddings(n_real)
    figures: dict = {"real_vectors": len(real), "fit_rows": rows, "dim": int(real.shape[1])}

    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-pca-") as tmp:
        tmp = Path(tmp)
        synthetic_dataset(real, rows, tmp / "emb")
        rng = np.random.default_rng(1)
        batches = [real[rng.integers(0, len(real), 10_000)] for _ in range(rows // 10_000 or 1)]
        t0 = time.perf_counter()
        fit_batches(batches, "efficientnet_lite0", dims=256)
        figures["fit_in_memory_s"] = round(time.perf_counter() - t0, 2)
        log(f"pca: fit on {rows:,} x 1280 in memory: {figures['fit_in_memory_s']} s")
        t0 = time.perf_counter()
        rep = pipeline.reduce(str(tmp / "emb"), str(tmp / "red"), get_settings().model_copy(
            update={"quality_sample": 10_000}), variance=0.95)
        figures["reduce_command_s"] = round(time.perf_counter() - t0, 2)
        figures["reduce_command_k_at_0.95"] = rep.reducer.k
        log(f"pca: imgsearch reduce over a {rows:,}-row Parquet dataset: {figures['reduce_command_s']} s "
            f"(fit + recall report + write), k={rep.reducer.k} at 95% variance")
        shutil.rmtree(tmp / "emb")

    recall = {}
    for dims in [d for d in (32, 64, 128, 256) if d < len(real) - 1]:
        for whiten in (False, True):
            red = fit_batches([real], "efficientnet_lite0", dims=dims, whiten=whiten)
            key = f"{dims}{'_whitened' if whiten else ''}"
            recall[key] = {"recall_at_10": round(recall_at_k(real, red.transform(real), k=10), 4),
                           "variance_kept": round(red.variance_kept, 4)}
    k95 = fit_batches([real], "efficientnet_lite0", variance=0.95)
    recall[f"variance_0.95_k{k95.k}"] = {"recall_at_10": round(recall_at_k(real, k95.transform(real), k=10), 4),
                                         "variance_kept": round(k95.variance_kept, 4)}
    figures["recall_at_10_vs_full"] = recall
    if not quick:  # the README's picture
        from imgsearch.reduce import plot

        docs = Path(__file__).resolve().parents[1] / "docs"
        docs.mkdir(exist_ok=True)
        plot(k95, docs / "pca-explained-variance.png")
    figures["goal_fit_s_max"] = 60
    path = save("pca", figures, quick)
    for key, val in recall.items():
        print(f"dims {key:22s} recall@10 vs full {val['recall_at_10']:.3f}  variance kept {val['variance_kept']:.3f}")
    print(f"fit {rows:,} x 1280: {figures['fit_in_memory_s']} s in memory, {figures['reduce_command_s']} s as "
          f"'imgsearch reduce' -> {path}")
    return figures
