"""CPU speed per runtime and precision, with the quality each keeps, recorded per CPU kind.

First the int8 model is built for this CPU kind (`imgsearch.models.int8`), tuned on images the quality sets do not
contain (openclipart drawings and desktop wallpapers), once without tuning (plain post-training quantization) and once
tuned, with the build's own figures recorded. Then, for every path this CPU can run well (torch fp32, ONNX Runtime
fp32 and int8, torch bf16 where bf16 is native):
* forward: pre-decoded crops through `Embedder.embed` in batches (bench.indexing.measure);
* end-to-end: the local engine over web-size JPEGs with the model loaded, and its ratio to the forward rate;
* query: one image at one thread (the service's setting), median of 30;
* quality against torch fp32 on real images: cosine per image, near-duplicate recall@1 (edited copies of the sample
  photos among the originals plus tuxpaint stamps as distractors), top-1 agreement, and labelled mAP on the stamps.

Figures go under the CPU kind read from /proc/cpuinfo (`imgsearch.models.cpu`). On a machine with AVX-512 the run is
repeated in a child process with ONEDNN_MAX_CPU_ISA=AVX2, recorded as the emulated AVX2 kind. That variable holds
oneDNN (torch) only: ONNX Runtime's kernels pick their instruction set themselves, so its emulated rows are marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import CACHE, RESULTS, log, save
from bench.datasets import ensure_debian_package, openclipart_files, web_set
from bench.eval import STAMPS, WALLPAPERS, stamp_classes
from bench.indexing import measure

MODEL = "efficientnet_lite0"
MODEL_CACHE = CACHE / "model-cache"  # the bench's own exports and int8 builds: never the user's cache
INT8_STEPS = 300


def paths_to_measure(cpu, int8: bool = False) -> list[tuple[str, str]]:
    from imgsearch.models.policy import onnx_available

    pairs = [("torch", "fp32")]
    if onnx_available():
        pairs.append(("onnx", "fp32"))
        if int8:
            pairs.append(("onnx", "int8"))
    if cpu.native_bf16:
        pairs.append(("torch", "bf16"))
    return pairs


def quality_images(tmp: Path, quick: bool):
    """Real images: the sample photos, their edited copies, and labelled tuxpaint stamps."""
    from imgsearch.evaluation import NEAR_DUP_TRANSFORMS
    from imgsearch.samples import write_sample_photos, write_variants

    photos = write_sample_photos(tmp / "photos")
    copies = write_variants(photos, tmp / "copies", kinds=NEAR_DUP_TRANSFORMS)
    queries = [(c, i) for i, p in enumerate(photos) for c in copies[p]]
    stamps: list[tuple[Path, str]] = []
    if ensure_debian_package("tuxpaint-stamps-default", STAMPS):
        classes = stamp_classes()
        for label, files in sorted(classes.items()):
            stamps += [(f, label) for f in (files[:8] if quick else files)]
    return photos, queries, stamps


def tuning_crops(prep, quick: bool) -> np.ndarray:
    """Images for the int8 tuning that no quality set contains: openclipart drawings and desktop wallpapers."""
    from imgsearch.imaging import DecodeError, decode_image

    files = openclipart_files()[::5][:200 if quick else 1200]
    if ensure_debian_package("plasma-workspace-wallpapers", WALLPAPERS):
        walls = [f for f in sorted(WALLPAPERS.rglob("*")) if f.suffix.lower() in (".jpg", ".png")
                 and f.stat().st_size < 4_000_000]
        files += walls[:50 if quick else 300]
    crops = []
    for f in files:
        try:
            crops.append(decode_image(f.read_bytes(), prep, 10**8).pixels)
        except DecodeError:
            continue
    return np.stack(crops)


def build_int8(cpu, prep, quick: bool) -> dict:
    """Build the int8 model without and with tuning; return both builds' figures (cosine on held-out tuning
    images, forward rates of int8 and fp32 in the same run)."""
    from imgsearch.models import get_spec
    from imgsearch.models.int8 import build_int8 as build, read_report, recipe_for

    crops = tuning_crops(prep, quick)
    out = {}
    for steps in (0, 40 if quick else INT8_STEPS):
        recipe = recipe_for(cpu.vnni, steps)
        log(f"cpu [{cpu.kind}]: building int8 ({steps} tuning steps, {len(crops)} images) ...")
        path = build(get_spec(MODEL), None, crops, recipe, MODEL_CACHE,
                     progress=lambda i, loss: i % 50 == 0 and log(f"  step {i}: loss {loss:.4f}"))
        key = "tuned" if steps else "post_training"
        out[key] = read_report(path)
        log(f"cpu [{cpu.kind}]: int8 {steps} steps: {out[key]}")
    return out


def decode_all(paths: list[Path], prep) -> np.ndarray:
    from imgsearch.imaging import decode_image

    return np.stack([decode_image(Path(p).read_bytes(), prep, 10**8).pixels for p in paths])


def quality(vec: np.ndarray, ref: np.ndarray, n_photos: int, targets: np.ndarray, n_queries: int,
            stamp_labels: list[str]) -> dict:
    from imgsearch.evaluation import labelled_metrics
    from imgsearch.vectors import top_k

    cos = (vec * ref).sum(1)
    index = np.concatenate([vec[:n_photos], vec[n_photos + n_queries:]])  # photos + stamps as distractors
    ref_index = np.concatenate([ref[:n_photos], ref[n_photos + n_queries:]])
    q, rq = vec[n_photos:n_photos + n_queries], ref[n_photos:n_photos + n_queries]
    top, ref_top = top_k(q, index, 1)[:, 0], top_k(rq, ref_index, 1)[:, 0]
    out = {"cosine_vs_torch_fp32_min": round(float(cos.min()), 5), "cosine_vs_torch_fp32_mean": round(float(cos.mean()), 5),
           "near_dup_recall@1": round(float((top == targets).mean()), 4),
           "top1_same_as_torch_fp32": round(float((top == ref_top).mean()), 4)}
    if stamp_labels:
        out["stamps_mAP"] = round(labelled_metrics(vec[n_photos + n_queries:], stamp_labels)["mAP"], 4)
    return out


def measure_kind(quick: bool) -> dict:
    from imgsearch.models.probe import query_latency_ms
    from imgsearch.models import cpu_features, create_model
    from imgsearch.models.policy import onnx_available

    cpu = cpu_features()
    n = 128 if quick else 768
    src = web_set(CACHE / f"web-{n}", n)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-cpu-") as tmp:
        photos, queries, stamps = quality_images(Path(tmp), quick)
        ref_model = create_model(MODEL, device="cpu", precision="fp32", runtime="torch", cache_dir=MODEL_CACHE)
        crops = decode_all(photos + [q for q, _ in queries] + [s for s, _ in stamps], ref_model.prep)
        ref = np.concatenate([ref_model.embed(crops[i:i + 32]) for i in range(0, len(crops), 32)])
        targets = np.array([t for _, t in queries])
        int8 = build_int8(cpu, ref_model.prep, quick) if onnx_available() else {}
        for runtime, precision in paths_to_measure(cpu, int8=bool(int8)):
            label = f"{runtime} {precision}"
            log(f"cpu [{cpu.kind}]: {label} ...")
            speed = measure(src, model=MODEL, precision=precision, runtime=runtime, sample=64 if quick else 256)
            emb = create_model(MODEL, device="cpu", precision=precision, runtime=runtime, cache_dir=MODEL_CACHE)
            vec = np.concatenate([emb.embed(crops[i:i + 32]) for i in range(0, len(crops), 32)])
            one = create_model(MODEL, device="cpu", precision=precision, runtime=runtime, threads=1,
                               cache_dir=MODEL_CACHE)
            row = {"forward_img_per_s": speed["forward_img_per_s"], "e2e_img_per_s": speed["e2e_img_per_s"],
                   "e2e_over_forward_ratio": speed["e2e_over_forward_ratio"],
                   "decode_bound_ratio": speed["decode_bound_ratio"],
                   "query_ms_one_thread": round(query_latency_ms(one, crops[:8], repeats=30), 2),
                   **quality(vec, ref, len(photos), targets, len(queries), [lab for _, lab in stamps])}
            if cpu.emulated and runtime == "onnx":
                row["note"] = "ONNX Runtime ignores ONEDNN_MAX_CPU_ISA: this row ran the hardware's full ISA"
            rows[label] = row
            log(f"cpu [{cpu.kind}]: {label}: {row}")
    import torch

    base = rows["torch fp32"]["forward_img_per_s"]
    for row in rows.values():
        row["forward_over_torch_fp32"] = round(row["forward_img_per_s"] / base, 2)
    from imgsearch.models.int8 import MIN_COSINE
    from imgsearch.models.policy import choose

    gain = rows["onnx int8"]["forward_img_per_s"] / rows["onnx fp32"]["forward_img_per_s"] if "onnx int8" in rows else None
    kept = bool(int8) and int8["tuned"]["cosine_mean"] >= MIN_COSINE
    plan = choose("cpu", "auto", "auto", cpu, int8_gain=gain if kept else None)
    return {"cpu": cpu.describe(), "torch": torch.__version__, "images_e2e": n, "auto": f"{plan.runtime} {plan.precision}",
            "int8_builds": int8,
            "quality_images": {"photos": len(photos), "edited_copies": len(queries), "stamps": len(stamps),
                               "stamp_classes": len({lab for _, lab in stamps})},
            "paths": rows}


def run(quick: bool = False) -> dict:
    from imgsearch.config import get_settings

    os.environ["IMGSEARCH_CACHE_DIR"] = str(MODEL_CACHE)  # measure() reads the settings
    get_settings.cache_clear()
    if os.environ.get("IMGSEARCH_BENCH_CPU_CHILD"):  # the emulated run: print, the parent records
        print(json.dumps(measure_kind(quick)))
        return {}
    from imgsearch.models import cpu_features

    path = RESULTS.with_name("results-quick.json") if quick else RESULTS
    old = json.loads(path.read_text()).get("sections", {}).get("cpu", {}) if path.exists() else {}
    kinds = dict(old.get("kinds", {}))  # figures of other CPU kinds, measured on other machines, are kept
    here = measure_kind(quick)
    kinds[here["cpu"]["kind"] + (" (emulated)" if here["cpu"]["emulated"] else "")] = here
    if "avx512f" in cpu_features().real_flags and not cpu_features().emulated:
        log("cpu: repeating under ONEDNN_MAX_CPU_ISA=AVX2 (emulated AVX2) ...")
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "IMGSEARCH_BENCH_CPU_CHILD": "1"}
        out = subprocess.run([sys.executable, "-m", "bench", "cpu", *(["--quick"] if quick else [])], env=env,
                             capture_output=True, text=True, check=True).stdout
        kinds["avx2 (emulated)"] = json.loads(out.strip().splitlines()[-1])
    figures = {"model": MODEL, "kinds": kinds,
               "targets": {"forward_over_torch_fp32_min": 2.0, "e2e_over_forward_min": 0.85,
                           "query_ms_one_thread_max": 25}}
    save("cpu", figures, quick)
    return figures
