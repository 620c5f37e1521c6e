"""Sample photos for demos and tests, assembled offline from files that PyPI packages ship (nothing is committed).

scikit-image bundles about twenty real photographs and scikit-learn two; `write_variants` makes the modified copies
(crop, resize, re-encode, flip) used by near-duplicate tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageOps

from imgsearch.errors import ImgSearchError

# Real photographs bundled in scikit-image's data folder (synthetic images like 'checkerboard' left out).
# motorcycle_right is left out too: it is the same scene as motorcycle_left from 6 cm away.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

VARIANTS = ("crop80", "resize50", "jpeg40", "hflip")
# Every kind make_variant knows: near-duplicates (same photo, another size / quality / slight crop) and the harder
# edits of the evaluation (rotation, colour jitter).
ALL_VARIANTS = ("crop90", "crop80", "resize50", "resize25", "jpeg40", "jpeg30", "hflip", "rotate10", "rotate-10",
                "jitter")


def sample_photo_files() -> list[Path]:
    """Paths of the bundled photos in the installed packages."""
    try:
        import skimage
        import sklearn
    except ImportError as exc:
        raise ImgSearchError(f"sample photos need scikit-image and scikit-learn: pip install 'imgsearch[samples]' ({exc})")
    sk_dir = Path(skimage.__file__).parent / "data"
    sl_dir = Path(sklearn.__file__).parent / "datasets" / "images"
    files = [sk_dir / n for n in SKIMAGE_PHOTOS] + [sl_dir / n for n in SKLEARN_PHOTOS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ImgSearchError(f"sample photos missing from the installed packages: {', '.join(missing)}")
    return files


def write_sample_photos(out: str | Path) -> list[Path]:
    """Copy the bundled photos into `out` as they are (their own formats and sizes). Returns the written paths."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sample_photo_files():
        prefix = "sklearn_" if "sklearn" in src.parts else "skimage_"
        target = dest / (prefix + src.name)
        shutil.copyfile(src, target)
        written.append(target)
    return written


def make_variant(im: Image.Image, kind: str) -> tuple[Image.Image, dict]:
    """One modified copy of a photo and the save options to use for it."""
    from imgsearch.imaging import to_rgb

    im = to_rgb(im)  # transparency on white, as indexing sees the original
    w, h = im.size
    if kind in ("crop80", "crop90"):
        f = int(kind[4:]) / 100
        cw, ch = int(w * f), int(h * f)
        left, top = (w - cw) // 2, (h - ch) // 2
        return im.crop((left, top, left + cw, top + ch)), {"quality": 95}
    if kind in ("resize50", "resize25"):
        d = 100 // int(kind[6:])
        return im.resize((max(1, w // d), max(1, h // d)), Image.Resampling.LANCZOS), {"quality": 95}
    if kind in ("jpeg40", "jpeg30"):
        return im, {"quality": int(kind[4:])}
    if kind == "hflip":
        return ImageOps.mirror(im), {"quality": 95}
    if kind in ("rotate10", "rotate-10"):
        return im.rotate(float(kind[6:]), resample=Image.Resampling.BICUBIC, expand=False), {"quality": 95}
    if kind == "jitter":  # brightness, contrast and saturation changed, as a phone's filter would
        from PIL import ImageEnhance

        out = ImageEnhance.Brightness(im).enhance(1.2)
        out = ImageEnhance.Contrast(out).enhance(0.8)
        return ImageEnhance.Color(out).enhance(1.3), {"quality": 95}
    raise ValueError(f"unknown variant {kind!r}; known: {', '.join(ALL_VARIANTS)}")


def write_variants(photos: list[Path], out: str | Path, kinds: tuple[str, ...] = VARIANTS) -> dict[Path, list[Path]]:
    """For each photo, write each kind of modified copy as JPEG into `out`. Returns original -> its copies."""
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    made: dict[Path, list[Path]] = {}
    for photo in photos:
        with Image.open(photo) as im:
            im.load()
            for kind in kinds:
                variant, opts = make_variant(im, kind)
                target = dest / f"{photo.stem}__{kind}.jpg"
                variant.save(target, "JPEG", **opts)
                made.setdefault(photo, []).append(target)
    return made


def write_lfw_faces(out: str | Path, n: int = 200) -> list[Path]:
    """Up to 200 small real face photos (scikit-image's bundled LFW subset) as PNGs: distractors for tests."""
    import numpy as np

    try:
        import skimage
    except ImportError as exc:
        raise ImgSearchError(f"sample photos need scikit-image: pip install 'imgsearch[samples]' ({exc})")
    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for i, face in enumerate(faces[:n]):
        arr = np.clip(face * 255 if face.max() <= 1.0 else face, 0, 255).astype(np.uint8)
        path = dest / f"lfw_face_{i:03d}.png"
        Image.fromarray(arr).resize((100, 100), Image.Resampling.BICUBIC).save(path)
        written.append(path)
    return written


# The demo collection: real images from Debian packages (installed by `make demo` where it can), nothing committed.
DEMO_PACKAGES = {
    "plasma-workspace-wallpapers": Path("/usr/share/wallpapers"),
    "tuxpaint-stamps-default": Path("/usr/share/tuxpaint/stamps"),
    "openclipart-png": Path("/usr/share/openclipart/png"),
}
DEMO_MAX_BYTES = 4 * 1024 * 1024  # a few openclipart posters are 10-50 MB: left out of the demo


def write_demo_set(out: str | Path, drawings_per_folder: int = 25) -> dict[str, int]:
    """A few thousand real images in folders: photos (the sample photos, the Plasma wallpaper photographs and edited
    copies of some: near-duplicates), tuxpaint stamps by category (drawings and photo cut-outs), and openclipart
    drawings, at most `drawings_per_folder` per category. Files keep their packages' dates (copy2), so browsing by
    date means something. Returns images written per part; a missing package contributes nothing."""
    dest = Path(out)
    counts: dict[str, int] = {}
    photos = write_sample_photos(dest / "photos" / "samples")
    wallpapers = DEMO_PACKAGES["plasma-workspace-wallpapers"]
    if wallpapers.is_dir():
        for w in sorted(p for p in wallpapers.iterdir() if (p / "contents" / "images").is_dir()):
            imgs = sorted({p.resolve() for p in (w / "contents" / "images").glob("*.*")}, key=lambda p: p.stat().st_size)
            if imgs and imgs[-1].stat().st_size <= DEMO_MAX_BYTES:
                target = dest / "photos" / "wallpapers" / f"{w.name}{imgs[-1].suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(imgs[-1], target)
                photos.append(target)
    edited = write_variants(photos[::3], dest / "photos" / "edited", kinds=("crop90", "resize50", "jpeg40"))
    counts["photos"] = len(photos) + sum(map(len, edited.values()))
    stamps = DEMO_PACKAGES["tuxpaint-stamps-default"]
    counts["stamps"] = _copy_tree(stamps, dest / "stamps", per_folder=None) if stamps.is_dir() else 0
    clipart = DEMO_PACKAGES["openclipart-png"]
    counts["drawings"] = _copy_tree(clipart, dest / "drawings", per_folder=drawings_per_folder) if clipart.is_dir() else 0
    return counts


def _copy_tree(src: Path, dest: Path, per_folder: int | None) -> int:
    n = 0
    by_folder: dict[Path, list[Path]] = {}
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file() and p.stat().st_size <= DEMO_MAX_BYTES:
            by_folder.setdefault(p.parent, []).append(p)
    for folder, files in by_folder.items():
        for p in files[:per_folder]:
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)
            n += 1
    return n
