"""Indexing from a bucket vs the same files on local disk, in one run: `imgsearch embed` (local engine) over a folder
of web-size JPEGs and over the same bytes in a loopback S3 server (moto's), alternated, plus the requests made.

The server is a Python process on this machine: it takes CPU from the model that a remote S3 service would not, so
the ratio here is a lower bound of what a real bucket gives (its latency is hidden by the I/O threads either way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import log, save
from bench.datasets import web_set

CACHE = Path(tempfile.gettempdir()) / "imgsearch-bench-data"
BUCKET = "imgsearch-bench"


def upload(endpoint: str, src: Path) -> int:
    from pyarrow import fs as pafs

    from imgsearch.s3_standalone import CREDENTIALS

    s3 = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http", region="us-east-1",
                           access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                           secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True)
    s3.create_dir(BUCKET)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for p in files:
        with s3.open_output_stream(f"{BUCKET}/{p.relative_to(src).as_posix()}") as out:
            out.write(p.read_bytes())
    return len(files)


def timed_embed(src: str, out: Path, env: dict) -> tuple[float, str]:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "imgsearch", "embed", src, "--out", str(out)], capture_output=True,
                         text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0 or "failed" in res.stderr:
        raise RuntimeError(f"embed {src} failed: {res.stderr[-2000:]}")
    return wall, next(line for line in res.stderr.splitlines() if line.startswith("embedded"))


def run(quick: bool = False) -> dict:
    from imgsearch.models import cpu_features
    from imgsearch.s3_standalone import CREDENTIALS, s3_standalone

    n, rounds = (96, 1) if quick else (768, 3)
    src = web_set(CACHE / f"web-{n}", n)
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-buckets-") as tmp:
        tmp = Path(tmp)
        with s3_standalone(tmp / "moto") as server:
            env = {**os.environ, **CREDENTIALS, "IMGSEARCH_S3_ENDPOINT": server.endpoint}
            objects = upload(server.endpoint, src)
            local_s, bucket_s, server_cpu = [], [], []
            for r in range(rounds):  # alternated, so drift on this noisy machine hits both alike
                wall, line = timed_embed(str(src), tmp / "local", env)
                local_s.append(wall)
                log(f"buckets: local disk {wall:.1f} s ({line})")
                start, cpu0 = server.requests(), server.cpu_seconds()
                wall, line = timed_embed(f"s3://{BUCKET}", tmp / "bucket", env)
                server_cpu.append(server.cpu_seconds() - cpu0)
                bucket_s.append(wall)
                log(f"buckets: s3:// loopback {wall:.1f} s ({line})")
                end = server.requests()
                per_run = {m: end.get(m, 0) - start.get(m, 0) for m in end}
    best_local, best_bucket = min(local_s), min(bucket_s)
    figures = {"images": n, "objects": objects, "rounds": rounds, "cpu_kind": cpu_features().kind,
               "server": "moto_server (moto[server], Python, same machine)",
               "local_s": [round(x, 2) for x in local_s], "bucket_s": [round(x, 2) for x in bucket_s],
               "local_img_per_s": round(n / best_local, 1), "bucket_img_per_s": round(n / best_bucket, 1),
               "bucket_over_local_rate": round(best_local / best_bucket, 3), "goal_ratio_min": 0.9,
               "requests_one_run": per_run,
               "server_cpu_s_per_run": [round(x, 2) for x in server_cpu],
               "server_cpu_share_of_machine": round(server_cpu[bucket_s.index(best_bucket)]
                                                    / (best_bucket * (os.cpu_count() or 1)), 3),
               "requests_per_image": round(sum(per_run.values()) / n, 2)}
    log(f"buckets: bucket/local rate {figures['bucket_over_local_rate']}, {figures['requests_per_image']} requests "
        f"per image {per_run}")
    path = save("buckets", figures, quick)
    log(f"-> {path}")
    return figures
