"""Measuring a model on this machine: forward rate, one-image latency, and the fastest path for queries.

The service embeds one query at a time at one thread, where fixed per-call costs weigh more than in batches, so the
path that indexes fastest need not answer fastest. `fastest_for_queries` times every candidate path on real photos
once per machine, model and thread count, records the figures in the cache folder, and returns the winner.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from imgsearch.imaging import decode_image
from imgsearch.models.cpu import cpu_features
from imgsearch.models.policy import onnx_available, runtime_versions
from imgsearch.models.registry import Embedder, create_model


def sample_crops(prep, n: int) -> np.ndarray:
    """n crops of the packaged real photos (repeated as needed)."""
    from imgsearch.samples import sample_photo_files

    photos = [decode_image(p.read_bytes(), prep, 10**8).pixels for p in sample_photo_files()]
    return np.stack([photos[i % len(photos)] for i in range(n)])


def forward_rate(emb: Embedder, crops: np.ndarray, seconds: float) -> float:
    """Images per second through `emb.embed` in batches of len(crops), for about `seconds` after one warm-up."""
    emb.embed(crops)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        emb.embed(crops)
        n += len(crops)
    return n / (time.perf_counter() - t0)


def query_latency_ms(emb: Embedder, crops: np.ndarray, repeats: int = 20) -> float:
    """Median time to embed one image (what a search spends on its query)."""
    emb.embed(crops[:1])
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        emb.embed(crops[i % len(crops):i % len(crops) + 1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def cpu_candidates(int8: bool = False) -> list[tuple[str, str]]:
    """The (runtime, precision) pairs this CPU runs well (bf16 only where it is native: emulated bf16 is ~25x slower
    than fp32 on an AVX2 CPU; int8 where `imgsearch quantize` built the model here and it kept the vectors)."""
    out = [("torch", "fp32")] + ([("torch", "bf16")] if cpu_features().native_bf16 else [])
    if onnx_available():
        out += [("onnx", "fp32")] + ([("onnx", "int8")] if int8 else [])
    return out


def usable_int8(model: str, weights: str | None, cache_dir: Path | None) -> str | None:
    """The file name of this machine's int8 build of `model` when it kept the vectors, else None."""
    from imgsearch.models.int8 import any_built, find_int8
    from imgsearch.models.registry import get_spec

    spec = get_spec(model)
    if not any_built(spec, cache_dir):
        return None
    built = find_int8(spec, spec.build(Path(weights) if weights else None), cpu_features(), cache_dir)
    return built.path.name if built is not None and built.kept else None


def fastest_for_queries(model: str, threads: int, cache_dir: Path, weights: str | None = None,
                        repeats: int = 15) -> tuple[Embedder, dict]:
    """The candidate path with the lowest one-image latency on this CPU, and the figures it was chosen by.

    Measured once and remembered in `cache_dir/choices/` under the CPU's flags, core count, thread count, model,
    weights file and library versions; later starts build the remembered path directly."""
    cpu = cpu_features()
    wkey = ""
    if weights:
        st = Path(weights).stat()
        wkey = f"{Path(weights).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    int8 = usable_int8(model, weights, cache_dir)
    key = json.dumps([model, wkey, sorted(cpu.flags), cpu.cores, threads, runtime_versions(), int8])
    path = Path(cache_dir) / "choices" / f"{model}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        record = json.loads(path.read_text())
        return create_model(model, weights=weights, device="cpu", runtime=record["runtime"],
                            precision=record["precision"], threads=threads, cache_dir=cache_dir), record
    except (OSError, ValueError, KeyError):
        pass
    best: tuple[float, Embedder] | None = None
    figures: dict[str, float] = {}
    crops = None
    for runtime, precision in cpu_candidates(int8=int8 is not None):
        emb = create_model(model, weights=weights, device="cpu", runtime=runtime, precision=precision,
                           threads=threads, cache_dir=cache_dir)
        crops = sample_crops(emb.prep, 8) if crops is None else crops
        ms = query_latency_ms(emb, crops, repeats)
        figures[f"{emb.runtime} {emb.precision}"] = round(ms, 2)
        if best is None or ms < best[0]:
            best = (ms, emb)
    assert best is not None  # torch fp32 is always a candidate
    emb = best[1]
    record = {"runtime": emb.runtime, "precision": emb.precision, "query_ms": figures, "cpu": cpu.kind,
              "threads": threads, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
    except OSError:  # a read-only cache: measure again next time
        pass
    return emb, record
