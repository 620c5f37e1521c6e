"""Real image sets for benchmarks, assembled from packages (nothing committed):
- Debian `openclipart-png`: 8,121 PNG drawings in category folders (installed here if missing and we are root);
- camera-size JPEGs made from the scikit-image/scikit-learn sample photos (random crops, long side 1024-4000 px).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from bench.common import log

OPENCLIPART = Path("/usr/share/openclipart/png")


def ensure_debian_package(package: str, probe: Path) -> bool:
    if probe.exists():
        return True
    if os.geteuid() != 0:
        log(f"{package} is not installed and we are not root: apt-get install {package}")
        return False
    log(f"installing Debian package {package} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True)
    if not probe.exists():
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True)
    return probe.exists()


def openclipart_files() -> list[Path]:
    if not ensure_debian_package("openclipart-png", OPENCLIPART):
        raise RuntimeError("openclipart-png is needed for this benchmark")
    return sorted(OPENCLIPART.rglob("*.png"))


def camera_jpegs(out: Path, n: int, seed: int = 0,
                 long_sides: tuple[int, ...] = (1024, 1600, 2048, 3000, 4000)) -> list[Path]:
    """n JPEGs at typical camera/web sizes, cut from the real sample photos (upscaled where the photo is small)."""
    from imgsearch.samples import sample_photo_files

    rng = random.Random(seed)
    photos = []
    for p in sample_photo_files():
        with Image.open(p) as im:
            photos.append(im.convert("RGB"))
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        f = rng.uniform(0.6, 1.0)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        long_side = rng.choice(long_sides)
        scale = long_side / max(cw, ch)
        crop = im.crop((x, y, x + cw, y + ch)).resize((max(1, int(cw * scale)), max(1, int(ch * scale))),
                                                      Image.Resampling.BICUBIC)
        path = out / f"photo_{i:05d}.jpg"
        crop.save(path, "JPEG", quality=rng.choice((85, 90, 95)))
        made.append(path)
    return made


def indexing_set(out: Path, n: int, photo_share: float = 0.25, seed: int = 0) -> Path:
    """A folder of n real images: openclipart PNGs plus camera-size JPEGs (photo_share of them). Reused if present."""
    marker = out / f".complete-{n}-{photo_share}-{seed}"
    if marker.exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    n_photos = int(n * photo_share)
    clip = openclipart_files()
    rng = random.Random(seed)
    chosen = rng.sample(clip, n - n_photos)
    (out / "clipart").mkdir(parents=True)
    for i, src in enumerate(chosen):
        shutil.copyfile(src, out / "clipart" / f"{src.parent.name}__{i:05d}_{src.name}")
    camera_jpegs(out / "photos", n_photos, seed)
    marker.write_text("")
    return out


WEB_SIZES = (512, 640, 800)


def web_set(out: Path, n: int, seed: int = 1) -> Path:
    """n web-size JPEGs (long side 512-800 px, as image datasets and img2dataset downloads store them)."""
    marker = out / f".complete-{n}-{seed}"
    if marker.exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    camera_jpegs(out, n, seed, long_sides=WEB_SIZES)
    marker.write_text("")
    return out
