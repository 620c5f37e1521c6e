"""Wall time of `imgsearch embed` with the Spark engine (local[2]) vs the local engine, on the same real images.

Both run as a user runs them: the command line in a fresh process, start-up and model load included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, log, save
from bench.datasets import indexing_set


def timed_embed(src: Path, out: Path, *extra: str) -> float:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "imgsearch", "embed", str(src), "--out", str(out), *extra],
                         capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"embed {' '.join(extra)} failed: {res.stderr[-2000:]}")
    log("  " + res.stderr.strip().splitlines()[0])
    return dt


def run(quick: bool = False) -> dict:
    # Spark pays a fixed start-up (JVM session, Python workers, moving bytes JVM -> Python) that a bigger job
    # amortises: measure at two sizes to show both the fixed cost and the per-image rate.
    sizes = [(256, 0.25)] if quick else [(2048, 0.25), (8192, 0.0625)]
    rows = []
    for n, photo_share in sizes:
        src = indexing_set(CACHE / f"indexing-{n}", n, photo_share=photo_share)
        with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
            tmp = Path(tmp)
            log(f"spark-vs-local: {n} images, local engine")
            local_s = timed_embed(src, tmp / "local")
            log("spark-vs-local: Spark engine, local[2]")
            spark_s = timed_embed(src, tmp / "spark", "--engine", "spark", "--master", "local[2]")
        rows.append({"images": n, "local_s": round(local_s, 2), "spark_local2_s": round(spark_s, 2),
                     "spark_over_local_ratio": round(spark_s / local_s, 3),
                     "local_img_per_s": round(n / local_s, 1), "spark_img_per_s": round(n / spark_s, 1)})
        print(f"embed {n} images: local {local_s:.1f}s, spark local[2] {spark_s:.1f}s, ratio {spark_s / local_s:.2f}")
    if len(rows) == 2:  # wall = fixed + n / rate, solved from the two sizes
        for eng in ("local_s", "spark_local2_s"):
            (n1, t1), (n2, t2) = [(r["images"], r[eng]) for r in rows]
            rate = (n2 - n1) / (t2 - t1)
            rows[0].setdefault("model", {})[eng.replace("_s", "")] = {"fixed_s": round(t1 - n1 / rate, 2),
                                                                     "img_per_s": round(rate, 1)}
    figures = {"runs": rows, "spark_over_local_ratio": rows[0]["spark_over_local_ratio"], "goal_ratio_max": 1.3}
    path = save("spark_vs_local", figures, quick)
    log(f"-> {path}")
    return figures
