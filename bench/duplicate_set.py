"""The near-duplicates benchmark's image set: look-alike originals from packages and seeded edited copies of some.

Originals are series that look alike (hard negatives): openclipart's flags, playing cards, jigsaw pieces, clocks,
action icons, stars, road signs and LED symbols; the tuxpaint photo/drawing stamps; photographs (the Plasma wallpapers'
largest size, half of the scikit-image/scikit-learn samples) and *bursts*: three overlapping crops of each of the
other half (the same scene, neither inside another, the full photo absent: different pictures). Files whose pixels are identical are kept once.

A seeded share of the originals gets edited copies: EASY edits (what a person calls the same photo) and one HARD
edit each. The truth is the construction: an original and its copies form one group. Originals are split in two
halves by a hash of their name: `tune` (to calibrate on) and `test` (to report).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from bench.common import log
from bench.datasets import OPENCLIPART, ensure_debian_package

STAMPS = Path("/usr/share/tuxpaint/stamps")
WALLPAPERS = Path("/usr/share/wallpapers")
SERIES = {"flags": "signs_and_symbols/flags", "cards": "recreation/games/cards", "jigsaw": "shapes/jigsaw",
          "clocks": "signs_and_symbols/clocks", "icons": "computer/icons/flat-theme/action", "stars": "shapes/stars",
          "roadsigns": "transportation/roadsigns", "led": "signs_and_symbols/led"}
EASY = ("half", "quarter", "jpeg_low", "crop90", "border", "caption", "screenshot")
HARD = ("crop70", "rotate3", "mirror", "colour")
EDITED_SHARE = 0.5
EASY_PER_ORIGINAL = 4
MIN_SIDE_TO_EDIT = 160  # smaller originals stay unedited (a quarter of a 64 px icon is not a copy anyone keeps)
MAX_BYTES = 4 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a few openclipart posters are far larger: indexing would refuse them anyway


def _split_of(name: str) -> str:
    return "tune" if hashlib.blake2b(name.encode(), digest_size=2).digest()[0] % 2 else "test"


def original_files(per_series: int, stamps: int, seed: int = 0) -> dict[str, list[Path]]:
    """Series name -> up to `per_series` files (a seeded choice), the stamps, the wallpaper photos."""
    rng = random.Random(seed)
    out: dict[str, list[Path]] = {}
    if ensure_debian_package("openclipart-png", OPENCLIPART):
        for name, folder in SERIES.items():
            files = sorted(p for p in (OPENCLIPART / folder).rglob("*.png") if p.stat().st_size <= MAX_BYTES)
            out[name] = sorted(rng.sample(files, min(per_series, len(files))))
    if ensure_debian_package("tuxpaint-stamps-default", STAMPS):
        files = sorted(p for p in STAMPS.rglob("*.png") if p.stat().st_size <= MAX_BYTES)
        out["stamps"] = sorted(rng.sample(files, min(stamps, len(files))))
    if ensure_debian_package("plasma-workspace-wallpapers", WALLPAPERS):
        walls = []
        for w in sorted(WALLPAPERS.iterdir()):
            imgs = sorted({p.resolve() for p in (w / "contents" / "images").glob("*.*")}, key=lambda p: p.stat().st_size)
            if imgs and imgs[-1].stat().st_size <= MAX_BYTES:
                walls.append(imgs[-1])
        out["wallpapers"] = walls
    return out


def edit(im: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, dict]:
    """One edited copy and its JPEG/PNG save options."""
    w, h = im.size
    if kind == "half":
        return im.resize((w // 2, h // 2), Image.Resampling.LANCZOS), {"format": "JPEG", "quality": 90}
    if kind == "quarter":
        return im.resize((max(1, w // 4), max(1, h // 4)), Image.Resampling.LANCZOS), {"format": "JPEG", "quality": 90}
    if kind == "jpeg_low":
        return im, {"format": "JPEG", "quality": rng.choice((20, 30, 40))}
    if kind in ("crop90", "crop70"):
        f = 0.9 if kind == "crop90" else rng.uniform(0.6, 0.75)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return im.crop((x, y, x + cw, y + ch)), {"format": "JPEG", "quality": 92}
    if kind == "border":
        colour = rng.choice(((0, 0, 0), (255, 255, 255), (40, 40, 40)))
        if rng.random() < 0.5:  # letterbox: bars above and below
            pad = int(h * rng.uniform(0.08, 0.2))
            out = Image.new("RGB", (w, h + 2 * pad), colour)
            out.paste(im, (0, pad))
        else:  # a frame all round
            pad = int(min(w, h) * rng.uniform(0.04, 0.1))
            out = Image.new("RGB", (w + 2 * pad, h + 2 * pad), colour)
            out.paste(im, (pad, pad))
        return out, {"format": "JPEG", "quality": 92}
    if kind == "caption":  # a dark strip with text over the bottom, as a watermark or a meme caption
        out = im.copy()
        strip = int(h * rng.uniform(0.08, 0.14))
        overlay = Image.new("RGBA", (w, strip), (0, 0, 0, 170))
        ImageDraw.Draw(overlay).text((max(2, w // 30), strip // 4), "imgsearch copy " + str(rng.randint(10, 99)),
                                     fill=(255, 255, 255, 255), font_size=max(8, strip // 2))
        out.paste(overlay, (0, h - strip), overlay)
        return out, {"format": "JPEG", "quality": 90}
    if kind == "screenshot":  # rescaled by an odd factor with a cheap filter, saved losslessly
        f = rng.uniform(0.6, 0.85)
        return im.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BILINEAR), {"format": "PNG"}
    if kind == "rotate3":
        return im.rotate(rng.choice((-3, 3)), resample=Image.Resampling.BICUBIC, expand=False,
                         fillcolor=(255, 255, 255)), {"format": "JPEG", "quality": 92}
    if kind == "mirror":
        return ImageOps.mirror(im), {"format": "JPEG", "quality": 92}
    if kind == "colour":
        out = ImageEnhance.Color(im).enhance(rng.uniform(1.4, 1.8))
        return ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2)), {"format": "JPEG", "quality": 92}
    raise ValueError(kind)


def _bursts(photo: Image.Image, rng: random.Random) -> list[Image.Image]:
    """Three 75% crops of one scene whose offsets differ by at least a fifth of the side: a burst, not copies."""
    w, h = photo.size
    cw, ch = int(w * 0.75), int(h * 0.75)
    spots = [(0, 0), (w - cw, h - ch), (w - cw, 0)] if rng.random() < 0.5 else [(0, h - ch), (w - cw, 0), (0, 0)]
    return [photo.crop((x, y, x + cw, y + ch)) for x, y in spots]


def build(out: Path, quick: bool, seed: int = 0) -> dict:
    """Write the set into `out` (reused when its manifest exists) and return the manifest: files with their group,
    series, split and edit."""
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    from imgsearch.imaging import to_rgb
    from imgsearch.samples import sample_photo_files

    rng = random.Random(seed)
    per_series, stamps = (12, 30) if quick else (120, 300)
    sources = original_files(per_series, stamps, seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files: list[dict] = []
    seen_pixels: set[str] = set()

    def add_original(im: Image.Image, series: str, name: str) -> dict | None:
        digest = hashlib.blake2b(im.tobytes() + str(im.size).encode(), digest_size=16).hexdigest()
        if digest in seen_pixels:
            return None
        seen_pixels.add(digest)
        rel = f"images/{series}/{len(files):05d}_{name}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(out / rel, "PNG")
        row = {"file": rel, "group": rel, "series": series, "split": _split_of(rel), "edit": None}
        files.append(row)
        return row

    originals: list[tuple[dict, Image.Image]] = []
    for series, paths in sources.items():
        for p in paths:
            with Image.open(p) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    continue
                rgb = to_rgb(im)
            if series == "wallpapers" and max(rgb.size) > 1600:
                rgb.thumbnail((1600, 1600), Image.Resampling.LANCZOS)
            row = add_original(rgb, series, p.stem)
            if row:
                originals.append((row, rgb))
    for n, p in enumerate(sample_photo_files()[: 8 if quick else None]):
        with Image.open(p) as im:
            rgb = to_rgb(im)
        if n % 2:  # half of the sample photos are a scene shot three times (the full photo is not in the set)
            for k, shot in enumerate(_bursts(rgb, rng)):
                add_original(shot, "bursts", f"{p.stem}_burst{k}")
            continue
        row = add_original(rgb, "photos", p.stem)
        if row:
            originals.append((row, rgb))
    edited = [o for o in originals if min(o[1].size) >= MIN_SIDE_TO_EDIT and rng.random() < EDITED_SHARE]
    for row, im in edited:
        for kind in rng.sample(EASY, EASY_PER_ORIGINAL) + [rng.choice(HARD)]:
            copy, opts = edit(im, kind, rng)
            fmt = opts.pop("format")
            rel = f"images/copies/{Path(row['file']).stem}__{kind}.{'jpg' if fmt == 'JPEG' else 'png'}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            copy.convert("RGB").save(out / rel, fmt, **opts)
            files.append({"file": rel, "group": row["group"], "series": row["series"], "split": row["split"],
                          "edit": kind})
    manifest = {"seed": seed, "quick": quick, "files": files, "easy": list(EASY), "hard": list(HARD)}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"duplicates set: {sum(f['edit'] is None for f in files)} originals, {len(edited)} of them edited, "
        f"{len(files)} files in {out}")
    return manifest


def truth_groups(manifest: dict, split: str | None = None, edits: tuple[str, ...] | None = None) -> list[list[str]]:
    """The true groups (files), of one split; with `edits`, only the copies made by those edits."""
    groups: dict[str, list[str]] = {}
    for f in manifest["files"]:
        if (split is None or f["split"] == split) and (f["edit"] is None or edits is None or f["edit"] in edits):
            groups.setdefault(f["group"], []).append(f["file"])
    return [g for g in groups.values() if len(g) > 1]


def largest(groups: list[list[str]]) -> int:
    return max((len(g) for g in groups), default=0)

