"""Search quality with `imgsearch eval` on real images from packages (nothing committed):

* near-duplicate: originals = the scikit-image/scikit-learn sample photos + Debian `tuxpaint-stamps-default` photo
  stamps; each edited 7 ways (crop 80%, half size, JPEG q30, rotation +-10 deg, flip, colour jitter) and searched
  among the originals + all 8,121 Debian `openclipart-png` drawings as distractors;
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
    from imgsearch.samples import write_sample_photos

    if not ensure_debian_package("tuxpaint-stamps-default", STAMPS) or not ensure_debian_package("openclipart-png",
                                                                                                  OPENCLIPART):
        raise RuntimeError("the eval benchmark needs Debian tuxpaint-stamps-default and openclipart-png")
    classes = stamp_classes()
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-eval-") as tmp:
        tmp = Path(tmp)
        originals, labelled = tmp / "originals", tmp / "labelled"
        write_sample_photos(originals / "photos")
        per_class = 3 if quick else None
        for name, files in classes.items():
            cls = name.replace("/", "__")
            for f in files[:per_class]:
                _copy(f, labelled / cls / f.name)
                _copy(f, originals / "stamps" / f"{cls}__{f.name}")
        distractors = OPENCLIPART
        if quick:
            distractors = tmp / "distractors"
            distractors.mkdir()
            for i, f in enumerate(sorted(OPENCLIPART.rglob("*.png"))[:300]):
                shutil.copyfile(f, distractors / f"{i:05d}.png")
        log("eval: near-duplicate retrieval (this embeds every distractor once)")
        nd = evaluation.run_near_dup(str(originals), "efficientnet_lite0", distractors=[str(distractors)])
        log(f"eval: near-dup recall@1 {nd.metrics['recall@1']:.4f}, recall@5 {nd.metrics['recall@5']:.4f} "
            f"({nd.details['queries']} queries, {nd.details['distractors']} distractors)")
        d = nd.details
        figures["near_dup"] = {**nd.as_dict(), "data": f"{d['originals']} photos/photo stamps × {len(d['transforms'])} "
                               f"edits among {d['originals'] + d['distractors']:,} images "
                               f"({d['distractors']:,} openclipart distractors)",
                               "summary": f"recall@1 {nd.metrics['recall@1']:.4f}, recall@5 "
                                          f"{nd.metrics['recall@5']:.4f}"}
        log("eval: labelled retrieval on the tuxpaint stamp folders")
        lab = evaluation.run_labelled(str(labelled), "efficientnet_lite0")
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
