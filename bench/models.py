"""Model loads: peak memory and speed of every registered model, traced vs eager, per precision and CPU kind.

This is the measurement behind each model's `trace` setting (`ModelSpec.trace`, the precisions it is traced in): a
precision is traced only where, on every CPU kind measured, the traced load stays within the memory bound and runs
at least 0.95x eager, and on at least one it runs `PAYS_MIN` x eager or faster.

Each configuration runs alone in a child process (`python -m bench.models child ...`), so the peaks are its own:
* base: RSS after importing torch and the model's code;
* load: the high-water mark of `create_model` (weights read, network built, traced or exported);
* first batch: the high-water mark after the first forward pass (a traced graph optimises itself there);
* speed: images/s of forward passes at one batch size after a warm-up batch, the best of `WINDOWS` timing windows.
The bound: the load's peak over base <= 3x the model's fp32 weights plus one batch of activations, where a batch's
activations are what the eager model's first batch added to its loaded RSS (same precision and CPU kind). A child that passes
`CAP_MB` is killed by the parent and recorded as such. Models without packaged weights load a file of
random weights made here (`imgsearch.models.random_weights`): the same architecture and load path, nothing
downloaded. On an AVX-512 machine the torch fp32 pair is repeated under ONEDNN_MAX_CPU_ISA=AVX2 (emulated AVX2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CACHE, RESULTS, log, save

WEIGHTS = CACHE / "random-weights"
CAP_MB = 12_000  # a child above this is killed (the machine has 24 GiB; the test suite's budget is 8 GB)
PAYS_MIN = 1.05  # traced must be at least this much faster than eager somewhere to be worth tracing
KEEPS_MIN = 0.95  # and never slower than this anywhere
WINDOWS = 3  # timing windows per configuration; the best counts
QUICK_MODELS = ("efficientnet_lite0", "mobileclip2_s0")


def batch_of(spec) -> int:
    return 8 if spec.text else 32


def child(name: str, weights: str, runtime: str, precision: str, jit: str, seconds: float, cache: str) -> dict:
    """Load one model once in this (fresh) process and measure it; the figures as a dict."""
    import numpy as np
    import torch

    from imgsearch import procmem
    from imgsearch.models import create_model, get_spec

    spec = get_spec(name)
    if spec.extra == "clip":
        import open_clip  # noqa: F401 - imported before the base figure: its import is not the load's cost
    base = procmem.rss_mb()
    procmem.reset_peak()
    t0 = time.perf_counter()
    emb = create_model(name, weights=weights or None, device="cpu", runtime=runtime, precision=precision,
                       jit={"auto": None, "1": True, "0": False}[jit], cache_dir=cache)
    load_s = time.perf_counter() - t0
    load_peak = procmem.peak_mb()
    weights_mb = sum(t.numel() * 4 for t in emb.module.state_dict().values() if t.is_floating_point()) / 2**20
    batch = batch_of(spec)
    x = np.random.default_rng(0).integers(0, 256, (batch, spec.prep.crop, spec.prep.crop, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    emb.embed(x)
    first_s = time.perf_counter() - t0
    first_peak = procmem.peak_mb()
    emb.embed(x)  # warm-up
    rates = []
    for _ in range(WINDOWS):  # the best of a few windows: this machine's noise only ever slows a window down
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds / WINDOWS:
            emb.embed(x)
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    rate = max(rates)
    return {"runtime": emb.runtime, "precision": emb.precision, "traced": bool(getattr(emb.session, "jit", False)),
            "torch_threads": torch.get_num_threads(), "batch": batch, "weights_fp32_mb": round(weights_mb),
            "base_mb": round(base), "load_peak_mb": round(load_peak), "first_batch_peak_mb": round(first_peak),
            "steady_rss_mb": round(procmem.rss_mb()), "peak_over_base_mb": round(max(load_peak, first_peak) - base),
            "load_over_base_mb": round(load_peak - base), "first_batch_mb": round(first_peak - load_peak),
            "load_s": round(load_s, 2), "first_batch_s": round(first_s, 2), "img_per_s": round(rate, 2)}


def run_child(name: str, weights: Path | None, runtime: str, precision: str, jit: str, seconds: float,
              env: dict | None = None, cap_mb: float = CAP_MB) -> dict:
    """One configuration in a fresh process, killed if its RSS passes `cap_mb`."""
    from imgsearch import procmem

    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-models-") as cache:  # exports counted in the load
        cmd = [sys.executable, "-m", "bench.models", "child", name, str(weights or ""), runtime, precision, jit,
               str(seconds), cache]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parents[1])
        seen = 0.0
        while proc.poll() is None:
            seen = max(seen, procmem.rss_mb(proc.pid) or 0.0)
            if seen > cap_mb:
                proc.kill()
                proc.communicate()
                return {"killed_above_mb": cap_mb}
            time.sleep(0.1)
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench models child {cmd[4:10]} failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def bound_mb(row: dict, eager: dict) -> float:
    """3x the fp32 weights plus one batch of activations (as the eager model's first batch measured them)."""
    return 3 * row["weights_fp32_mb"] + max(eager["first_batch_mb"], 0)


def with_bound(row: dict, eager: dict) -> dict:
    if "killed_above_mb" in row or "error" in row:
        return {**row, "within_bound": False}
    return {**row, "bound_mb": round(bound_mb(row, eager)),
            "within_bound": row["load_over_base_mb"] <= bound_mb(row, eager)}


def verdict(eager: dict, traced: dict) -> dict:
    """Traced against eager for one precision on one CPU kind."""
    eager, traced = with_bound(eager, eager), with_bound(traced, eager)
    if "killed_above_mb" in traced:
        return {"eager": eager, "traced": traced, "traced_over_eager": None, "extra_peak_mb": None}
    return {"eager": eager, "traced": traced, "traced_over_eager": round(traced["img_per_s"] / eager["img_per_s"], 3),
            "extra_peak_mb": traced["peak_over_base_mb"] - eager["peak_over_base_mb"]}


def precisions_that_pay(kinds: dict) -> list[str]:
    """The precisions to trace in: on every CPU kind measured within the bound and >= KEEPS_MIN x eager, and on at
    least one >= PAYS_MIN x eager."""
    by_precision: dict[str, list[dict]] = {}
    for per_kind in kinds.values():
        for path, v in per_kind.items():
            if path.startswith("torch "):
                by_precision.setdefault(path.split()[1], []).append(v)
    return sorted(p for p, vs in by_precision.items()
                  if all(v["traced"]["within_bound"] and (v["traced_over_eager"] or 0) >= KEEPS_MIN for v in vs)
                  and any(v["traced_over_eager"] >= PAYS_MIN for v in vs))


def measure_model(spec, cpu, seconds: float) -> dict:
    from imgsearch.models.policy import onnx_available
    from imgsearch.models.random_weights import random_weights_file

    weights = random_weights_file(spec.name, WEIGHTS)
    precisions = ["fp32"] + (["bf16"] if cpu.native_bf16 else [])
    kinds: dict[str, dict] = {}
    here = cpu.kind + (" (emulated)" if cpu.emulated else "")
    runs = [(here, p, {}) for p in precisions]
    if "avx512f" in cpu.real_flags and not cpu.emulated:
        runs.append(("avx2 (emulated)", "fp32", {"ONEDNN_MAX_CPU_ISA": "AVX2"}))
    for kind, precision, env in runs:
        rows = {}
        for jit in ("0", "1"):
            log(f"models [{kind}]: {spec.name} torch {precision} {'traced' if jit == '1' else 'eager'} ...")
            rows["traced" if jit == "1" else "eager"] = run_child(spec.name, weights, "torch", precision, jit,
                                                                   seconds, env)
        kinds.setdefault(kind, {})[f"torch {precision}"] = rows  # judged with everything recorded (`rejudged`)
    if onnx_available():
        log(f"models [{here}]: {spec.name} onnx fp32 (export counted in the load) ...")
        try:
            kinds[here]["onnx fp32"] = run_child(spec.name, weights, "onnx", "fp32", "auto", seconds)
        except RuntimeError as exc:
            kinds[here]["onnx fp32"] = {"error": str(exc).splitlines()[-1][:300]}
    return {"weights": "random, made here" if weights else "packaged", "kinds": kinds}


def decide(spec, entry: dict) -> dict:
    """The precisions tracing pays in, over every CPU kind measured (this machine's and those recorded from others),
    against what the registry says."""
    pays = precisions_that_pay(entry["kinds"])
    log(f"models: {spec.name}: tracing pays in {pays or 'no precision'} (registry: trace={list(spec.trace)})")
    # the registry's choice against tracing every precision (what every model did before): its forward rate
    chosen = [(v["traced"] if path.split()[1] in spec.trace else v["eager"])["img_per_s"] / v["traced"]["img_per_s"]
              for per_kind in entry["kinds"].values() for path, v in per_kind.items()
              if "eager" in v and "img_per_s" in v["traced"]]
    return {**entry, "trace_pays": pays, "registry_trace": sorted(spec.trace),
            "registry_agrees": pays == sorted(spec.trace),
            "chosen_over_all_traced_min": round(min(chosen), 3) if chosen else None}


def rejudged(kinds: dict) -> dict:
    """Measured or recorded figures judged by the current rule and bound (the measurements themselves are kept)."""
    out: dict[str, dict] = {}
    for kind, paths in kinds.items():
        out[kind] = {p: verdict(r["eager"], r["traced"]) for p, r in paths.items() if "eager" in r}
        for p, r in paths.items():
            if "eager" not in r:
                eager = out[kind].get("torch fp32", {}).get("eager")
                out[kind][p] = with_bound(r, eager) if eager and "error" not in r else r
    return out


def run(quick: bool = False) -> dict:
    """Measure the registered models (`IMGSEARCH_BENCH_MODELS=a,b` measures only those; the others' recorded
    figures are kept) and decide each one's precisions to trace from everything recorded."""
    from imgsearch.models import cpu_features, get_spec, list_models

    cpu = cpu_features()
    only = [n for n in os.environ.get("IMGSEARCH_BENCH_MODELS", "").split(",") if n]
    specs = [s for s in list_models() if not s.name.startswith("test_") and (not quick or s.name in QUICK_MODELS)
             and (not only or s.name in only)]
    path = RESULTS.with_name("results-quick.json") if quick else RESULTS
    old = json.loads(path.read_text()).get("sections", {}).get("models", {}) if path.exists() else {}
    models = dict(old.get("models", {}))
    for spec in specs:
        entry = measure_model(spec, cpu, 2.0 if quick else 6.0)
        kinds = {**models.get(spec.name, {}).get("kinds", {}), **entry["kinds"]}  # other machines' kinds are kept
        models[spec.name] = {**entry, "kinds": kinds}
    for name, entry in models.items():
        models[name] = decide(get_spec(name), {**entry, "kinds": rejudged(entry["kinds"])})
    figures = {"bound": "load peak over base <= 3 x fp32 weights + one batch of activations (the eager first batch's)",
               "pays_min": PAYS_MIN, "keeps_min": KEEPS_MIN, "cap_mb": CAP_MB, "models": models}
    save("models", figures, quick)
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == "child":
        a = sys.argv[2:]
        print(json.dumps(child(a[0], a[1], a[2], a[3], a[4], float(a[5]), a[6])))
    else:
        sys.exit("usage: python -m bench models [--quick]  (python -m bench.models child ... is its own child)")
