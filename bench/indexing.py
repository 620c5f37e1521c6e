"""Indexing speed: the model's own forward rate against the end-to-end rate, measured in one run.

* forward: pre-decoded 224x224 uint8 crops of the same images through `Embedder.embed` in batches (no I/O, no decode);
* end-to-end: the local engine over the folder: list + read + decode + preprocess + embed + write Parquet, the model
  already loaded (as for every image after the first in a real job).

Forward is measured before and after the end-to-end run and averaged, so drift on a noisy machine shows up (both
values are recorded). Images: openclipart PNG drawings + camera-size JPEGs (bench.datasets.indexing_set), and
in full mode also web-size JPEGs (long side 512-800, as image datasets store them).

`decode_bound_ratio` is the most the ratio can be on this machine: the model alone already uses every core, so each
core-millisecond spent decoding is one the model lacks: bound = model core-ms / (model core-ms + decode core-ms).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import CACHE, log, save
from bench.datasets import indexing_set, web_set


def forward_rate(embedder, crops: np.ndarray, batch: int, repeats: int = 2) -> float:
    embedder.embed(crops[:batch])  # warm-up
    n, t0 = 0, time.perf_counter()
    for _ in range(repeats):
        for s in range(0, len(crops), batch):
            embedder.embed(crops[s:s + batch])
            n += len(crops[s:s + batch])
    return n / (time.perf_counter() - t0)


def measure(src: Path, model: str = "efficientnet_lite0", precision: str | None = None, sample: int = 512,
            weights: str | None = None, runtime: str | None = None) -> dict:
    from imgsearch.config import get_settings
    from imgsearch.core import decode_record
    from imgsearch.engines.local import embed_records
    from imgsearch.jobs import EmbedJob
    from imgsearch.sources import list_images, read_bytes

    s = get_settings()
    s = s.model_copy(update={"precision": precision or s.precision, "runtime": runtime or s.runtime})
    job = EmbedJob.from_settings(s, model,
                                 weights=weights, progress=False)
    emb = job.create_embedder()
    records = list(list_images(src))
    picked = records[:: max(1, len(records) // sample)][:sample]
    t0 = time.perf_counter()
    outs = [decode_record(r, read_bytes, emb.prep, s.max_pixels) for r in picked]
    decode_ms = (time.perf_counter() - t0) / len(picked) * 1000
    crops = np.stack([o.image.pixels for o in outs if o.image is not None])
    before = forward_rate(emb, crops, s.batch_size)
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-e2e-") as tmp:
        t0 = time.perf_counter()
        rep = embed_records(list(list_images(src)), Path(tmp) / "emb", emb, job)
        e2e_s = time.perf_counter() - t0
    after = forward_rate(emb, crops, s.batch_size)
    forward = (before + after) / 2
    e2e = (rep.embedded + rep.failed) / e2e_s
    # The ceiling decoding leaves when the model already uses every core: decoding costs core time the model then
    # lacks. ratio <= model core-ms / (model core-ms + decode core-ms), however well the two overlap.
    cores = os.cpu_count() or 1
    model_core_ms = cores * 1000 / forward
    return {"model": model, "runtime": emb.runtime, "precision": emb.precision, "images": len(records), "embedded": rep.embedded,
            "failed": rep.failed, "batch_size": s.batch_size, "torch_threads": s.torch_threads or "cores",
            "decode_one_thread_ms_per_img": round(decode_ms, 2),
            "forward_img_per_s": round(forward, 1), "forward_before_after": [round(before, 1), round(after, 1)],
            "e2e_img_per_s": round(e2e, 1), "e2e_s": round(e2e_s, 2),
            "e2e_over_forward_ratio": round(e2e / forward, 3),
            "model_core_ms_per_img": round(model_core_ms, 2),
            "decode_bound_ratio": round(model_core_ms / (model_core_ms + decode_ms), 3)}


def run(quick: bool = False) -> dict:
    n = 256 if quick else 2048
    src = indexing_set(CACHE / f"indexing-{n}", n, photo_share=0.25)
    log(f"indexing: {n} images in {src}")
    main = measure(src, sample=128 if quick else 512)
    log(f"indexing: forward {main['forward_img_per_s']} img/s, end-to-end {main['e2e_img_per_s']} img/s, "
        f"ratio {main['e2e_over_forward_ratio']} ({main['precision']})")
    figures = {**main, "goal_ratio_min": 0.85}
    if not quick:
        web = measure(web_set(CACHE / "web-2048", 2048), sample=512)
        figures["web"] = {k: web[k] for k in ("images", "forward_img_per_s", "e2e_img_per_s", "e2e_over_forward_ratio",
                                              "decode_one_thread_ms_per_img", "decode_bound_ratio")}
        log(f"indexing, web-size JPEGs: forward {web['forward_img_per_s']}, end-to-end {web['e2e_img_per_s']}, "
            f"ratio {web['e2e_over_forward_ratio']} (decode bound {web['decode_bound_ratio']})")
        fp32 = measure(src, precision="fp32", sample=256)
        figures["fp32"] = {k: fp32[k] for k in ("forward_img_per_s", "e2e_img_per_s", "e2e_over_forward_ratio")}
        log(f"indexing fp32: forward {fp32['forward_img_per_s']}, end-to-end {fp32['e2e_img_per_s']}")
        import torch
        import torchvision

        with tempfile.TemporaryDirectory() as tmp:  # ResNet50's speed does not depend on its weights: made here
            weights = str(Path(tmp) / "resnet50.pth")
            torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
            r50 = measure(src, model="resnet50", weights=weights, sample=256)
        figures["resnet50"] = {k: r50[k] for k in ("precision", "forward_img_per_s", "e2e_img_per_s",
                                                   "e2e_over_forward_ratio", "decode_bound_ratio")}
        log(f"indexing resnet50: forward {r50['forward_img_per_s']}, end-to-end {r50['e2e_img_per_s']}")
    save("indexing", figures, quick)
    return figures
