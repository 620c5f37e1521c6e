"""Load benchmark of the search service: `imgsearch serve` in its own process, a load generator in this one.

Index: the 21 real sample photos plus distractor vectors (real photo embeddings with noise, re-normalised) up to
10,240 vectors: FLAT search cost depends on the count and dim, not on what the vectors show. Queries: real JPEG
uploads (modified copies of the photos: crop, resize, JPEG q40, flip), each a full search (decode, embed, Milvus).

Phases, each bounded in requests and seconds:
- closed loop: C clients each send a request as soon as their last one answered (C = 16 and 50): the most the
  machine serves, and the latency when it is saturated. At 16 clients, one phase per kind of request, in one run:
  plain search (no query expansion: the service before the web app), the default search (query expansion), search
  with filters (folder, width, date), browsing pages (newest first) and filtered browsing; their throughput is
  reported as a ratio to plain search;
- open loop: requests start on a fixed schedule (a target rate) with up to 50 in flight; latency counts from the
  scheduled start, so a slow server cannot hide its queue (no coordinated omission).
"""

from __future__ import annotations

import http.client
import io
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import log, percentiles, save


def _multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive HTTP connection; one request at a time."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def send(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> int:
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return 0

    def search(self, body: bytes, ctype: str, k: int, query: str = "") -> int:
        return self.send("POST", f"/api/search?k={k}{query}", body, ctype)


def search_requests(queries: list[tuple[bytes, str]], k: int = 10, query: str = ""):
    """Request i of a phase of image searches: (method, path, body, content type)."""
    return lambda i: ("POST", f"/api/search?k={k}{query}", *queries[i % len(queries)])


def browse_requests(total: int, query: str = "", limit: int = 60):
    """Request i of a phase of browsing: pages spread over the collection."""
    pages = max(1, total // limit)
    return lambda i: ("GET", f"/api/images?limit={limit}&offset={(i * 37 % pages) * limit}{query}", None, None)


def closed_loop(host: str, port: int, queries: list[tuple[bytes, str]] | None, clients: int, max_requests: int,
                max_seconds: float, k: int = 10, request=None, label: str = "search") -> dict:
    """`request(i)` gives the i-th request; by default an image search with the i-th query."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + max_seconds
    request = request or search_requests(queries, k)

    def worker(wid: int) -> None:
        nonlocal errors
        c = Client(host, port)
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            method, path, body, ctype = request(i * 7 + wid)
            t0 = time.perf_counter()
            status = c.send(method, path, body, ctype)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if status != 200:
                    errors += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"mode": "closed", "kind": label, "clients": clients, "requests": len(lat), "errors": errors,
            "seconds": round(wall, 2), "qps": round(len(lat) / wall, 1), **percentiles(lat)}


def open_loop(host: str, port: int, queries: list[tuple[bytes, str]], rate: float, max_in_flight: int,
              max_requests: int, max_seconds: float, k: int = 10) -> dict:
    lat: list[float] = []
    errors = 0
    dropped = 0
    lock = threading.Lock()
    local = threading.local()
    in_flight = threading.Semaphore(max_in_flight)

    def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            if not hasattr(local, "c"):
                local.c = Client(host, port)
            body, ctype = queries[i % len(queries)]
            status = local.c.search(body, ctype, k)
            dt = time.perf_counter() - scheduled  # from the scheduled start: queueing counts
            with lock:
                lat.append(dt)
                if status != 200:
                    errors += 1
        finally:
            in_flight.release()

    n = min(max_requests, int(rate * max_seconds))
    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if not in_flight.acquire(timeout=30):
                dropped += 1
                continue
            pool.submit(one, i, scheduled)
    wall = time.perf_counter() - start
    return {"mode": "open", "target_qps": rate, "max_in_flight": max_in_flight, "requests": len(lat),
            "errors": errors + dropped, "seconds": round(wall, 2), "qps": round(len(lat) / wall, 1),
            **percentiles(lat)}


def build_index(work: Path, n_vectors: int) -> tuple[Path, list[tuple[bytes, str]]]:
    from PIL import Image

    from imgsearch import dataset as dset
    from imgsearch import pipeline
    from imgsearch.config import get_settings
    from imgsearch.samples import VARIANTS, make_variant, write_sample_photos
    from imgsearch.sources import image_id

    photos = write_sample_photos(work / "photos")
    db = work / "bench.db"
    parquet = work / "parquet"
    pipeline.embed(str(work / "photos"), str(parquet), "efficientnet_lite0", get_settings(), progress=False)
    real = np.concatenate([dset.vectors_of(b) for b in dset.iter_embedded(parquet)])
    rng = np.random.default_rng(0)
    n_extra = n_vectors - len(real)
    base = real[rng.integers(0, len(real), n_extra)]
    noisy = base + rng.standard_normal(base.shape).astype(np.float32) * 0.03
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    cols = dset.empty_columns()
    now = datetime.now(timezone.utc).timestamp()
    for i in range(n_extra):  # 20 folders, dates over 5 years, widths 320..4000: the filters have work to do
        uri = f"file:///bench/d{i % 20:02d}/{i:06d}.jpg"
        cols["id"].append(image_id(uri))
        cols["path"].append(uri)
        width = int(rng.integers(320, 4000))
        for name, val in (("model", "efficientnet_lite0"), ("dim", 1280), ("width", width),
                          ("height", width * 3 // 4), ("bytes", 100_000),
                          ("mtime", datetime.fromtimestamp(now - float(rng.uniform(0, 5 * 365 * 86400)), timezone.utc)),
                          ("format", "JPEG"), ("error", None)):
            cols[name].append(val)
    dset.write_part(dset.to_table(cols, list(noisy)), parquet)
    pipeline.load(parquet, str(db), get_settings())
    queries = []
    for p in photos:
        with Image.open(p) as im:
            im.load()
            for kind in VARIANTS:
                v, opts = make_variant(im, kind)
                buf = io.BytesIO()
                v.save(buf, "JPEG", **opts)
                queries.append(_multipart(buf.getvalue(), f"{p.stem}-{kind}.jpg"))
    return db, queries


def run(quick: bool = False) -> dict:
    from imgsearch.server.live import live_server

    n_vectors = 2_000 if quick else 10_240
    per_phase = 80 if quick else 4_000
    max_s = 20 if quick else 150
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
        work = Path(tmp)
        log(f"search-load: building an index of {n_vectors} vectors")
        db, queries = build_index(work, n_vectors)
        with live_server(db, log_dir=work) as url:
            host, port = url.split("//")[1].split(":")
            port = int(port)
            closed_loop(host, port, queries, 4, 40, 30)  # warm-up: workers, caches, allocator
            phases = []
            flt = "&folder=/bench/d03&min_width=1000&date_from=2023-01-01"
            kinds = [("search, plain (no query expansion)", search_requests(queries, query="&expand=false")),
                     ("search (default: query expansion)", search_requests(queries)),
                     ("search with filters", search_requests(queries, query=flt)),
                     ("browse, newest first", browse_requests(n_vectors, "&sort=date")),
                     ("browse with filters", browse_requests(n_vectors // 60, flt + "&sort=name"))]
            closed_loop(host, port, None, 4, 40, 30, request=kinds[3][1])  # warm-up: the browse table
            for label, request in kinds:
                log(f"search-load: closed loop, 16 clients, {label}")
                phases.append(closed_loop(host, port, None, 16, per_phase, max_s, request=request, label=label))
                log(f"  {phases[-1]}")
            log("search-load: closed loop, 50 clients (default search)")
            phases.append(closed_loop(host, port, queries, 50, per_phase, max_s, label=kinds[1][0]))
            log(f"  {phases[-1]}")
            for rate in (50,):
                log(f"search-load: open loop at {rate}/s, up to 50 in flight (default search)")
                phases.append(open_loop(host, port, queries, rate, 50, per_phase, max_s))
                log(f"  {phases[-1]}")
    total = sum(p["requests"] for p in phases)
    errors = sum(p["errors"] for p in phases)
    base = phases[0]["qps"]
    ratios = {p["kind"]: round(p["qps"] / base, 3) for p in phases[:5]}
    figures = {"index_vectors": n_vectors, "dim": 1280, "query_images": len(queries), "k": 10,
               "total_requests": total, "total_errors": errors, "phases": phases,
               "throughput_vs_plain_search": ratios,
               "goals": {"errors": 0, "p50_ms": 30, "p99_ms": 100, "qps": 50}}
    path = save("search_load", figures, quick)
    log(f"search-load: {total} requests, {errors} errors -> {path}")
    for p in phases:
        label = (f"closed {p['clients']} {p['kind'][:26]}" if p["mode"] == "closed" else f"open {p['target_qps']}/s")
        print(f"{label:40s} {p['requests']:6d} req  {p['qps']:7.1f} qps  p50 {p['p50_ms']:7.1f} ms  "
              f"p99 {p['p99_ms']:7.1f} ms  errors {p['errors']}")
    return figures
