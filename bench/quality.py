"""Neighbour quality on labelled image sets from packages (sub-folder = class), leave-one-out:
mAP / P@1 / recall@5 for EfficientNet-Lite0/1/2, average vs GeM pooling, flip test-time augmentation, and the
post-processing variants of imgsearch.evaluation (centring, alpha query expansion, PCA whitening), with img/s.

Sets (nothing committed; Debian packages installed by bench.datasets):
The default this chose: alpha query expansion at search time (no re-indexing; one more search per query). Centring
and PCA (`index --reduce 256`) raise mAP more but change stored vectors and score scales; flip TTA halves img/s.

* stamps: tuxpaint-stamps-default, one class per stamp folder (animals/birds, ...): drawings and photo cut-outs;
* openclipart: openclipart-png, one class per two-level folder (animals/mammals, food/fruit, ...), at most 40 per
  class: line-art and clip-art;
* wesnoth: wesnoth-1.16-data unit sprites (72 px), one class per faction folder, base sprites only (no animation
  frames): pixel art.
No labelled photo set ships in a package reachable here; these are all drawings of some kind (said in the README).

Vectors are computed once per (model, pooling, flip) with torch fp32 on the decoded crops of the indexing path
(identical to the ONNX runtime's to cosine 0.99999); img/s is the product Embedder's forward rate (auto runtime,
all cores) on a batch of 32 crops, the indexing engine's batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import log, save
from bench.datasets import OPENCLIPART, ensure_debian_package
from bench.eval import STAMPS, stamp_classes

WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/images/units")
MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def openclipart_classes(min_per_class: int = 8, max_per_class: int = 40) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for p in sorted(OPENCLIPART.rglob("*.png")):
        rel = p.parent.relative_to(OPENCLIPART).parts
        if len(rel) >= 2:
            classes.setdefault("/".join(rel[:2]), []).append(p)
    return {k: v[:max_per_class] for k, v in classes.items() if len(v) >= min_per_class}


def wesnoth_classes(min_per_class: int = 5) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for race in sorted(d for d in WESNOTH.iterdir() if d.is_dir()):
        files = [p for p in sorted(race.rglob("*.png")) if "-" not in p.stem]
        if len(files) >= min_per_class:
            classes[race.name] = files
    return classes


MAX_PIXELS = 50_000_000


def _pixels(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width * im.height


def labelled_sets(quick: bool) -> dict[str, tuple[list[Path], list[str]]]:
    needs = {"tuxpaint-stamps-default": STAMPS, "openclipart-png": OPENCLIPART, "wesnoth-1.16-data": WESNOTH}
    missing = [pkg for pkg, probe in needs.items() if not ensure_debian_package(pkg, probe)]
    if missing:
        raise RuntimeError(f"the quality benchmark needs the Debian packages {', '.join(missing)}")
    out = {}
    for name, classes in (("stamps", stamp_classes()), ("openclipart", openclipart_classes()),
                          ("wesnoth", wesnoth_classes())):
        files, labels = [], []
        for cls, paths in sorted(classes.items()):
            for p in paths[: 4 if quick else None]:
                if _pixels(p) <= MAX_PIXELS:  # a few openclipart posters exceed the indexing pixel limit
                    files.append(p)
                    labels.append(cls)
        out[name] = (files, labels)
    return out


def features(model: str, files: list[Path], flip: bool) -> dict[str, np.ndarray]:
    """avg- and GeM-pooled features of every file (decoded as indexing decodes), with torch fp32."""
    import torch

    from imgsearch.imaging import decode_image
    from imgsearch.models import get_spec
    from imgsearch.models.efficientnet import GEM_P

    spec = get_spec(model)
    net = spec.build(None).eval()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    avg, gem = [], []
    for start in range(0, len(files), 32):
        crops = np.stack([decode_image(p.read_bytes(), spec.prep, MAX_PIXELS).pixels for p in files[start:start + 32]])
        if flip:
            crops = crops[:, :, ::-1].copy()
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - mean) / std
        with torch.inference_mode():
            fmap = net.inner.extract_features(x)
            avg.append(fmap.mean(dim=(2, 3)).numpy())
            gem.append(fmap.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1 / GEM_P).numpy())
    return {"avg": np.concatenate(avg), "gem": np.concatenate(gem)}


def forward_rate(model: str, repeats: int = 3) -> float:
    """Images per second of the product's Embedder (auto runtime) on batches of 32 crops."""
    from imgsearch.models import create_model

    emb = create_model(model)
    crop = emb.prep.crop
    x = np.random.default_rng(0).integers(0, 256, (32, crop, crop, 3), dtype=np.uint8)
    emb.embed(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        emb.embed(x)
        best = min(best, time.perf_counter() - t)
    return round(32 / best, 1)


def run(quick: bool = False) -> dict:
    from imgsearch.evaluation import postprocessed_metrics
    from imgsearch.vectors import unit

    sets = labelled_sets(quick)
    models = MODELS[:1] if quick else MODELS
    started = time.perf_counter()
    rows: list[dict] = []
    for model in models:
        rate = forward_rate(model)
        log(f"quality: {model} forward {rate} img/s")
        per_set: dict[str, dict] = {}
        for set_name, (files, labels) in sets.items():
            plain = features(model, files, flip=False)
            flipped = features(model, files, flip=True)
            for pooling in ("avg", "gem"):
                for tta in (False, True):
                    x = unit(plain[pooling]) + (unit(flipped[pooling]) if tta else 0)
                    for post, m in postprocessed_metrics(x, labels).items():
                        per_set.setdefault((pooling, tta, post), {})[set_name] = {
                            k: round(m[k], 4) for k in ("mAP", "P@1", "recall@5")}
            log(f"quality: {model} {set_name} done ({len(files)} images)")
        for (pooling, tta, post), got in per_set.items():
            rows.append({"model": model, "pooling": pooling, "flip_tta": tta, "post": post,
                         "img_per_s": round(rate / (2 if tta else 1), 1), "sets": got})
    base = next(r for r in rows if r["model"] == MODELS[0] and r["pooling"] == "avg" and not r["flip_tta"]
                and r["post"] == "none")
    for r in rows:
        r["mAP_gain"] = {s: round(r["sets"][s]["mAP"] - base["sets"][s]["mAP"], 4) for s in r["sets"]}
        r["raises_every_set"] = all(g > 0 for g in r["mAP_gain"].values())
    default = next(r for r in rows if r["model"] == MODELS[0] and r["pooling"] == "avg" and not r["flip_tta"]
                   and r["post"] == "alpha-QE")
    figures = {
        "sets": {name: {"images": len(f), "classes": len(set(lab))} for name, (f, lab) in sets.items()},
        "baseline": "efficientnet_lite0, average pooling, no TTA, no post-processing (the default before this run)",
        "default": {"what": "efficientnet_lite0, average pooling, alpha query expansion (3 neighbours, alpha 3): "
                            "the search default now (IMGSEARCH_QUERY_EXPANSION=3)",
                    "sets": default["sets"], "mAP_gain": default["mAP_gain"],
                    "raises_every_set": default["raises_every_set"]},
        "rows": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    save("quality", figures, quick)
    return figures


def markdown(figures: dict) -> str:
    """The README's quality table: one line per configuration, mAP (P@1) per set, img/s, gain over the baseline."""
    sets = list(figures["sets"])
    head = ("| configuration | " + " | ".join(f"{s} mAP (P@1)" for s in sets) + " | img/s | raises mAP on every set |\n"
            "|---|" + "---|" * len(sets) + "---|---|\n")
    lines = []
    for r in figures["rows"]:
        name = f"{r['model']}, {r['pooling']} pooling" + (", flip TTA" if r["flip_tta"] else "") + \
               ("" if r["post"] == "none" else f", {r['post']}")
        cells = " | ".join(f"{r['sets'][s]['mAP']:.3f} ({r['sets'][s]['P@1']:.3f})" for s in sets)
        lines.append(f"| {name} | {cells} | {r['img_per_s']} | {'yes' if r['raises_every_set'] else 'no'} |")
    return head + "\n".join(lines) + "\n"


# -- learned on another, larger collection -------------------------------------------------------------------------

REFERENCE_ARCHIVES = ("/usr/share/games/ufoai/base/0textures.pk3", "/usr/share/games/nexuiz/data/textures.pk3")
REFERENCE_FOLDERS = ("/usr/share/wallpapers", "/usr/share/backgrounds")


def reference_images(crops: int, work: Path) -> list[bytes]:
    """Images none of the labelled sets holds: the UFO:AI and Nexuiz textures (photo-derived, read out of their .pk3
    archives; TGA re-encoded as PNG), the desktop wallpapers and camera-size crops of the sample photos."""
    import io
    import zipfile

    from PIL import Image

    from bench.datasets import camera_jpegs

    out: list[bytes] = []
    for arch in REFERENCE_ARCHIVES:
        if not Path(arch).is_file():
            continue
        with zipfile.ZipFile(arch) as z:
            for n in sorted(z.namelist()):
                if n.lower().endswith((".jpg", ".jpeg", ".png", ".tga")):
                    data = z.read(n)
                    try:
                        with Image.open(io.BytesIO(data)) as im:
                            if min(im.size) < 32:
                                continue
                            if n.lower().endswith(".tga"):
                                buf = io.BytesIO()
                                im.convert("RGB").save(buf, "PNG")
                                data = buf.getvalue()
                    except Exception:  # noqa: BLE001 - not an image Pillow reads
                        continue
                    out.append(data)
    for folder in REFERENCE_FOLDERS:
        seen = set()
        for p in sorted(Path(folder).rglob("*")) if Path(folder).is_dir() else []:
            if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file() and p.resolve() not in seen:
                seen.add(p.resolve())
                if p.stat().st_size <= 20 * 2**20:
                    out.append(p.read_bytes())
    out += [p.read_bytes() for p in camera_jpegs(work / "crops", crops)]
    return out


def byte_features(model: str, images: list[bytes]) -> np.ndarray:
    """Average-pooled features of encoded images, decoded as indexing decodes (undecodable ones skipped)."""
    import torch

    from imgsearch.imaging import DecodeError, decode_image
    from imgsearch.models import get_spec

    spec = get_spec(model)
    net = spec.build(None).eval()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    feats = []
    for start in range(0, len(images), 32):
        crops = []
        for data in images[start:start + 32]:
            try:
                crops.append(decode_image(data, spec.prep, MAX_PIXELS).pixels)
            except DecodeError:
                continue
        if not crops:
            continue
        x = (torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() - mean) / std
        with torch.inference_mode():
            feats.append(net.inner.extract_features(x).mean(dim=(2, 3)).numpy())
    return np.concatenate(feats)


def run_reference(quick: bool = False) -> dict:
    """Centring and PCA (plain and whitened) learned on a larger collection of *other* images, applied to each
    labelled set (Lite0, average pooling): does a mean or a whitening learned elsewhere carry over?"""
    import tempfile

    from imgsearch.evaluation import alpha_query_expansion, labelled_metrics
    from imgsearch.reduce import fit_batches
    from imgsearch.vectors import unit

    model = MODELS[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-ref-") as tmp:
        images = reference_images(200 if quick else 2000, Path(tmp))
    if quick:
        images = images[:600]
    log(f"quality-reference: embedding {len(images)} reference images with {model}")
    ref = unit(byte_features(model, images))
    mu = ref.mean(axis=0)
    fits = {f"PCA-{d}{' whitened' if w else ''}": fit_batches([ref], "ref", dims=min(d, len(ref) // 2), whiten=w)
            for d, w in ((256, False), (256, True), (512, True))}
    out: dict[str, dict] = {}
    for set_name, (files, labels) in labelled_sets(quick).items():
        x = unit(features(model, files, flip=False)["avg"])
        c = unit(x - mu)
        variants = {"none": labelled_metrics(x, labels),
                    "centred on the reference mean": labelled_metrics(c, labels),
                    "centred on the reference mean + alpha-QE": labelled_metrics(c, labels,
                                                                                 queries=alpha_query_expansion(c))}
        for name, red in fits.items():
            variants[f"{name} learned on the reference"] = labelled_metrics(red.transform(x), labels)
        for name, m in variants.items():
            out.setdefault(name, {})[set_name] = {k: round(m[k], 4) for k in ("mAP", "P@1", "recall@5")}
        log(f"quality-reference: {set_name} done")
    figures = {"model": model, "reference_images": len(ref),
               "reference": "UFO:AI and Nexuiz textures, desktop wallpapers, camera-size crops of the sample photos",
               "rows": out, "seconds": round(time.perf_counter() - started, 1)}
    save("quality_reference", figures, quick)
    return figures
