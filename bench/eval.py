"""Search quality with `imgsearch eval` on real images from packages (nothing committed):

* near-duplicate, real photos: originals = the scikit-image/scikit-learn sample photos + the photos of Debian
  `plasma-workspace-wallpapers` (largest file of each); each edited 7 ways (crop 80%, half size, JPEG q30,
  rotation +-10 deg, flip, colour jitter) and searched among the originals + distractors: all 8,121 Debian
  `openclipart-png` drawings and the `tuxpaint-stamps-default` stamps;
* near-duplicate, stamps (harder: many stamps are near-identical drawings, flags, signs): the same with the stamps as
  originals and openclipart as distractors (full mode only);
* labelled: the tuxpaint stamps, one class per stamp folder (e.g. animals/birds), leave-one-out.

ANN-vs-exact recall is measured on 10k/100k collections by bench/search_latency.py.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.common import log, save
from bench.datasets import OPENCLIPART, ensure_debian_package

STAMPS = Path("/usr/share/tuxpaint/stamps")
WALLPAPERS = Path("/usr/share/wallpapers")


def wallpaper_photos(out: Path) -> int:
    """The largest image of each Plasma wallpaper (the other sizes are links to it), copied into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for w in sorted(WALLPAPERS.iterdir()):
        imgs = sorted({p.resolve() for p in (w / "contents" / "images").glob("*.*")}, key=lambda p: p.stat().st_size)
        if imgs:
            shutil.copyfile(imgs[-1], out / f"wallpaper_{w.name}{imgs[-1].suffix}")
            n += 1
    return n


def stamp_classes(min_per_class: int = 5) -> dict[str, list[Path]]:
    """Stamp PNGs grouped by their folder under the stamps root (e.g. 'animals/birds')."""
    classes: dict[str, list[Path]] = {}
    for p in sorted(STAMPS.rglob("*.png")):
        rel = p.parent.relative_to(STAMPS)
        key = "/".join(rel.parts[:2])
        classes.setdefault(key, []).append(p)
    return {k: v for k, v in classes.items() if len(v) >= min_per_class}


def run(quick: bool = False) -> dict:
    from imgsearch import evaluation
    from imgsearch.config import get_settings
    from imgsearch.samples import write_sample_photos

    needs = {"tuxpaint-stamps-default": STAMPS, "openclipart-png": OPENCLIPART,
             "plasma-workspace-wallpapers": WALLPAPERS / "Autumn"}
    missing = [pkg for pkg, probe in needs.items() if not ensure_debian_package(pkg, probe)]
    if missing:
        raise RuntimeError(f"the eval benchmark needs the Debian packages {', '.join(missing)}")
    classes = stamp_classes()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-eval-") as tmp:
        tmp = Path(tmp)
        photos, labelled, stamps = tmp / "photos", tmp / "labelled", tmp / "stamps"
        write_sample_photos(photos)
        wallpaper_photos(photos)
        per_class = 3 if quick else None
        for name, files in classes.items():
            cls = name.replace("/", "__")
            for f in files[:per_class]:
                _copy(f, labelled / cls / f.name)
                _copy(f, stamps / f"{cls}__{f.name}")
        distractors = OPENCLIPART
        if quick:
            distractors = tmp / "distractors"
            distractors.mkdir()
            for i, f in enumerate(sorted(OPENCLIPART.rglob("*.png"))[:300]):
                shutil.copyfile(f, distractors / f"{i:05d}.png")
        runs = [("near_dup", photos, [distractors, stamps], "real photos (sample photos + Plasma wallpapers)",
                 "openclipart drawings + tuxpaint stamps")]
        if not quick:
            runs.append(("near_dup_stamps", stamps, [distractors], "tuxpaint stamps (drawings, photo cut-outs, "
                         "flags, signs)", "openclipart drawings"))
        for key, originals, distr, what, distr_what in runs:
            log(f"eval: near-duplicate retrieval, {what} (this embeds every distractor)")
            nd = evaluation.run_near_dup(str(originals), "efficientnet_lite0", get_settings(), distractors=[str(d) for d in distr])
            d = nd.details
            log(f"eval: {key} recall@1 {nd.metrics['recall@1']:.4f}, recall@5 {nd.metrics['recall@5']:.4f} "
                f"({d['queries']} queries, {d['distractors']} distractors)")
            figures[key] = {**nd.as_dict(), "data": f"{d['originals']} {what} × {len(d['transforms'])} edits, "
                            f"searched among {d['originals'] + d['distractors']:,} images ({d['distractors']:,} "
                            f"distractors: {distr_what})",
                            "summary": f"recall@1 {nd.metrics['recall@1']:.4f}, recall@5 {nd.metrics['recall@5']:.4f}"}
        log("eval: labelled retrieval on the tuxpaint stamp folders")
        lab = evaluation.run_labelled(str(labelled), "efficientnet_lite0", get_settings())
        m = lab.metrics
        figures["labelled"] = {**lab.as_dict(), "data": f"tuxpaint stamps: {lab.details['images']} images in "
                               f"{lab.details['classes']} folders",
                               "summary": f"mAP {m['mAP']:.3f}, P@1 {m['P@1']:.3f}, recall@5 {m['recall@5']:.3f}, "
                                          f"recall@10 {m['recall@10']:.3f}"}
        log(f"eval: labelled {figures['labelled']['summary']}")
    save("eval", figures, quick)
    return figures


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
