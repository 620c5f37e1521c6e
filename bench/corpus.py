"""A Flickr30k-sized corpus (>= 31,783 real images) for `bench scale`, assembled from packages only, never committed.

Sources (Debian packages, installed here if missing and we are root; PyPI sample photos):
- openclipart-png: 8,121 drawings; wesnoth-1.16-data: game art (portraits, units, terrain; >= 32 px a side);
- ufoai-textures, nexuiz-textures: photo-derived textures, read out of their .pk3 (zip) archives;
- tuxpaint-stamps-default: labelled photo stamps; Plasma wallpapers (photographs at many sizes: near-duplicates) and
  the GNOME, MATE, UKUI and Lomiri backgrounds;
- scikit-image / scikit-learn sample photos;
then topped up to the target with camera-size crops (long side 1024-4000 px, JPEG) of the real photos.
The composition (count, bytes and size distribution per source) is returned and recorded with the results.
"""

from __future__ import annotations

import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import log
from bench.datasets import camera_jpegs, ensure_debian_package

FLICKR30K = 31_783
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".tga")  # .tga (textures) is re-encoded as PNG
MIN_SIDE = 32

# source name -> (Debian package, a path it installs, folders to take images from, .pk3 archives to read)
DEBIAN = {
    "openclipart": ("openclipart-png", "/usr/share/openclipart/png", ["/usr/share/openclipart/png"], []),
    "wesnoth": ("wesnoth-1.16-data", "/usr/share/games/wesnoth/1.16/data/core/images",
                ["/usr/share/games/wesnoth/1.16/data/core/images"], []),
    "ufoai-textures": ("ufoai-textures", "/usr/share/games/ufoai/base/0textures.pk3", [],
                       ["/usr/share/games/ufoai/base/0textures.pk3"]),
    "nexuiz-textures": ("nexuiz-textures", "/usr/share/games/nexuiz/data/textures.pk3", [],
                        ["/usr/share/games/nexuiz/data/textures.pk3"]),
    "tuxpaint-stamps": ("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps", ["/usr/share/tuxpaint/stamps"], []),
    "wallpapers-plasma": ("plasma-workspace-wallpapers", "/usr/share/wallpapers", ["/usr/share/wallpapers"], []),
    "wallpapers-desktop": (("gnome-backgrounds", "mate-backgrounds", "ukui-wallpapers", "lomiri-wallpapers"),
                           "/usr/share/backgrounds/gnome", ["/usr/share/backgrounds"], []),
}


def _big_enough(path_or_file) -> tuple[int, int] | None:
    try:
        with Image.open(path_or_file) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not an image Pillow reads: left out of the corpus
        return None
    return (w, h) if min(w, h) >= MIN_SIDE else None


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src.resolve(), dest)  # same file system: no copy (packages ship some images as symlinks)
    except OSError:
        shutil.copyfile(src, dest)


def build(out: Path, target: int = FLICKR30K, limit_per_source: int | None = None, seed: int = 0) -> dict:
    """Fill `out` with >= target images (reused when already built); returns the composition."""
    marker = out / f".complete-{target}-{limit_per_source}-{seed}.txt"
    if marker.exists():
        import json

        return json.loads(marker.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    sizes: dict[str, list[tuple[int, int, int]]] = {}
    for name, (package, probe, folders, archives) in DEBIAN.items():
        packages = (package,) if isinstance(package, str) else package
        for extra in packages[1:]:  # best effort: the source is still taken without them
            ensure_debian_package(extra, Path("/usr/share/doc") / extra)
        if not ensure_debian_package(packages[0], Path(probe)):
            log(f"corpus: {packages[0]} unavailable, {name} left out")
            continue
        dest = out / name
        dest.mkdir()
        got = sizes.setdefault(name, [])
        files = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())
        if limit_per_source:
            files = rng.sample(files, min(limit_per_source, len(files)))
        for i, p in enumerate(files):
            wh = _big_enough(p)
            if wh:
                target_path = dest / f"{i:05d}_{p.name}"
                _place(p, target_path)
                got.append((*wh, target_path.stat().st_size))
        for arch in archives:
            with zipfile.ZipFile(arch) as z:
                names = sorted(n for n in z.namelist() if n.lower().endswith(IMAGE_EXT))
                if limit_per_source:
                    names = rng.sample(names, min(limit_per_source, len(names)))
                for i, n in enumerate(names):
                    data = z.read(n)
                    import io

                    wh = _big_enough(io.BytesIO(data))
                    if not wh:
                        continue
                    target_path = dest / f"{i:05d}_{Path(n).name}"
                    if target_path.suffix.lower() == ".tga":  # no file signature: re-encoded as PNG, pixels kept
                        target_path = target_path.with_suffix(".png")
                        with Image.open(io.BytesIO(data)) as im:
                            im.save(target_path, "PNG")
                    else:
                        target_path.write_bytes(data)
                    got.append((*wh, target_path.stat().st_size))
        log(f"corpus: {name}: {len(got)} images")
    from imgsearch.samples import write_sample_photos

    samples = write_sample_photos(out / "sample-photos")
    sizes["sample-photos"] = [(*Image.open(p).size, p.stat().st_size) for p in samples]
    have = sum(len(v) for v in sizes.values())
    if have < target:  # made once per count and kept: cutting and encoding 4000 px JPEGs takes minutes
        crops = out.parent / f"camera-crops-{target - have}-{seed}"
        if not (crops / ".complete").exists():
            shutil.rmtree(crops, ignore_errors=True)
            camera_jpegs(crops, target - have, seed)
            (crops / ".complete").write_text("")
        shutil.copytree(crops, out / "camera-crops", copy_function=os.link)
        made = sorted((out / "camera-crops").glob("*.jpg"))
        sizes["camera-crops"] = [(*Image.open(p).size, p.stat().st_size) for p in made]
    composition = describe(sizes)
    import json

    marker.write_text(json.dumps(composition))
    return composition


def describe(sizes: dict[str, list[tuple[int, int, int]]]) -> dict:
    """Counts, bytes and long-side percentiles per source, and for the whole corpus."""
    def stats(rows):
        if not rows:
            return {"images": 0}
        a = np.asarray(rows, np.float64)
        long_side = a[:, :2].max(axis=1)
        return {"images": len(rows), "mib": round(float(a[:, 2].sum()) / 2**20, 1),
                "long_side_px_p10_p50_p90": [int(np.percentile(long_side, q)) for q in (10, 50, 90)],
                "megapixels_mean": round(float((a[:, 0] * a[:, 1]).mean() / 1e6), 3)}

    every = [r for rows in sizes.values() for r in rows]
    return {"total": stats(every), "sources": {k: stats(v) for k, v in sizes.items()}}
