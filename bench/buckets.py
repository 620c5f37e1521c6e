"""Indexing from a bucket vs the same files on local disk, in one run: `imgsearch embed` (local engine) over a folder
of web-size JPEGs and over the same bytes in a loopback S3 server (moto's), alternated, plus the requests made. Rates
are those of the embedding phase each run reports (start-up, paid alike, would flatter the ratio); whole-command times
are recorded too.

The server is a Python process on this machine: it takes CPU from the model that a remote S3 service would not. So
the comparison runs twice, each with its own server:
* shared: server and imgsearch on every core (a lower bound: the server's CPU is the model's loss);
* pinned: the server on the last core, imgsearch (local disk and bucket runs alike) on the others, so both runs have
  the same compute and the ratio shows whether the bucket's latency and request overhead hide behind the model, as
  they must against a real S3 service (the goal: >= 0.9).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, log, save
from bench.datasets import web_set

BUCKET = "imgsearch-bench"


def upload(endpoint: str, src: Path) -> int:
    from pyarrow import fs as pafs

    from imgsearch.s3_standalone import CREDENTIALS

    s3 = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http", region="us-east-1",
                           access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                           secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True)
    s3.create_dir(BUCKET)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))  # not the set's marker
    for p in files:
        with s3.open_output_stream(f"{BUCKET}/{p.relative_to(src).as_posix()}") as out:
            out.write(p.read_bytes())
    return len(files)


def timed_embed(src: str, out: Path, env: dict, cpus: set[int] | None = None) -> tuple[float, float, float, str]:
    """(wall seconds of the whole command, seconds of its embedding phase as it reports them, the CPU ms per image it
    reports for that phase, its summary line): the phase excludes the start-up (imports, model load) that both runs pay alike and that would
    flatter the ratio."""
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "imgsearch", "embed", src, "--out", str(out)], capture_output=True,
                         text=True, env=env, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    wall = time.perf_counter() - t0
    if res.returncode != 0 or "failed" in res.stderr:
        raise RuntimeError(f"embed {src} failed: {res.stderr[-2000:]}")
    line = next(line for line in res.stderr.splitlines() if line.startswith("embedded"))
    cpu_ms = float(re.search(r", ([0-9.]+) ms CPU per image", line).group(1))
    return wall, float(re.search(r" in ([0-9.]+)s", line).group(1)), cpu_ms, line


def compare(src: Path, n: int, rounds: int, tmp: Path, pinned: bool) -> dict:
    """Local disk vs the loopback bucket, alternated `rounds` times, with one server; `pinned`: see the module."""
    from imgsearch.config import usable_cpus
    from imgsearch.s3_standalone import CREDENTIALS, s3_standalone

    cores = sorted(os.sched_getaffinity(0))
    server_cpus = {cores[-1]} if pinned and len(cores) > 1 else None
    ours = set(cores[:-1]) if server_cpus else None
    mode = "pinned" if server_cpus else "shared"
    with s3_standalone(tmp / f"moto-{mode}", cpus=server_cpus) as server:
        env = {**os.environ, **CREDENTIALS, "IMGSEARCH_S3_ENDPOINT": server.endpoint}
        objects = upload(server.endpoint, src)
        local_s, bucket_s, local_wall, bucket_wall, server_cpu = [], [], [], [], []
        local_cpu, bucket_cpu = [], []
        for _ in range(rounds):  # alternated, so drift on this noisy machine hits both alike
            wall, phase, cpu, line = timed_embed(str(src), tmp / "local", env, ours)
            local_s.append(phase)
            local_wall.append(wall)
            local_cpu.append(cpu)
            log(f"buckets ({mode}): local disk {wall:.1f} s ({line})")
            start, cpu0 = server.requests(), server.cpu_seconds()
            wall, phase, cpu, line = timed_embed(f"s3://{BUCKET}", tmp / "bucket", env, ours)
            server_cpu.append(server.cpu_seconds() - cpu0)
            bucket_s.append(phase)
            bucket_wall.append(wall)
            bucket_cpu.append(cpu)
            log(f"buckets ({mode}): s3:// loopback {wall:.1f} s ({line})")
            end = server.requests()
            per_run = {m: end.get(m, 0) - start.get(m, 0) for m in end}
    best_local, best_bucket = min(local_s), min(bucket_s)
    return {"mode": mode, "imgsearch_cores": len(ours) if ours else usable_cpus(),
            "server_cores": len(server_cpus) if server_cpus else "shared", "objects": objects,
            "local_s": [round(x, 2) for x in local_s], "bucket_s": [round(x, 2) for x in bucket_s],
            "local_img_per_s": round(n / best_local, 1), "bucket_img_per_s": round(n / best_bucket, 1),
            "bucket_over_local_rate": round(best_local / best_bucket, 3),
            "wall_local_s": [round(x, 2) for x in local_wall], "wall_bucket_s": [round(x, 2) for x in bucket_wall],
            "bucket_over_local_rate_wall": round(min(local_wall) / min(bucket_wall), 3),
            "requests_one_run": per_run, "requests_per_image": round(sum(per_run.values()) / n, 2),
            # what reading from the bucket costs imgsearch's own process (the S3 client: HEAD + GET, threads), per
            # image: the median CPU of the bucket runs minus that of the local-disk runs. Against a model that
            # needs m ms of CPU per image, the bucket rate can reach at most m / (m + this)
            "cpu_ms_per_image_local": local_cpu, "cpu_ms_per_image_bucket": bucket_cpu,
            "client_cpu_ms_per_image": round(statistics.median(bucket_cpu) - statistics.median(local_cpu), 2),
            "local_cpu_ms_per_image": round(statistics.median(local_cpu), 1),
            "server_cpu_s_per_run": [round(x, 2) for x in server_cpu],
            "server_cpu_share_of_machine": round(server_cpu[bucket_s.index(best_bucket)]
                                                 / (bucket_wall[bucket_s.index(best_bucket)] * len(cores)), 3)}


def run(quick: bool = False) -> dict:
    from imgsearch.models import cpu_features

    n, rounds = (48, 1) if quick else (768, 3)
    src = web_set(CACHE / f"web-{n}", n)
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-buckets-") as tmp:
        runs = {mode: compare(src, n, rounds, Path(tmp), pinned=mode == "pinned") for mode in ("shared", "pinned")}
    pinned, shared = runs["pinned"], runs["shared"]
    figures = {"images": n, "rounds": rounds, "cpu_kind": cpu_features().kind,
               "server": "moto_server (moto[server], Python, same machine)", "goal_ratio_min": 0.9,
               "bucket_over_local_rate": pinned["bucket_over_local_rate"],
               "bucket_over_local_rate_shared_cores": shared["bucket_over_local_rate"],
               "requests_per_image": pinned["requests_per_image"], "runs": runs}
    for mode, r in runs.items():
        log(f"buckets ({mode}): bucket/local rate {r['bucket_over_local_rate']}, {r['requests_per_image']} requests "
            f"per image {r['requests_one_run']}")
    path = save("buckets", figures, quick)
    log(f"-> {path}")
    return figures
