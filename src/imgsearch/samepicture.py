"""Is image B the same picture as image A, edited? The verification stage of near-duplicates.

Embeddings find images that look alike; a flag and another flag, two clocks showing different times or two shots of a
burst look alike too, and no cosine threshold separates them from "the same photo, resized". This module decides
from the pixels, on small sketches of the two images:

1. a sketch: the image oriented, in RGB, its uniform border (letterbox, frame) trimmed, at most SIDE pixels long;
2. alignment: one sketch is searched inside the other at coverages 1.0 down to MIN_COVERAGE of its width or height
   (normalised cross-correlation, OpenCV's matchTemplate; coarse at COARSE_SIDE pixels, then refined): this finds
   resizes, re-encodes, crops that keep at least MIN_COVERAGE of each side and borders;
3. the decision: the placed pair compared block by block at two scales (8 x 8 blocks at 96 px, where a change of
   part of the picture shows; 16 x 16 blocks at 64 px, where a small one does: a clock's hands, a card's frame line):
   the same picture when no block differs by more than that scale's limit, except blocks in one band along an edge
   (a caption or a watermark strip across the top or bottom, at most a quarter deep). A change inside the picture (a
   clock's hands, a card's suit, another flag's emblem) makes it another picture.

Not found: mirror images (symbols such as p and q, or arrows, are each other's mirror images), rotations beyond a
degree or two, perspective changes, strong colour edits, crops keeping less than MIN_COVERAGE; two different crops of
one scene (neither inside the other) are different pictures by design.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageChops

SIDE = 128  # long side of a sketch, pixels
COARSE_SIDE = 48  # long side of the coarse alignment search
MIN_COVERAGE = 0.55  # a crop keeping at least this share of each side is still found
COVERAGE_STEP = 0.05  # coarse steps of coverage; the best few are refined to a quarter of a step
PLACE_MIN_NCC = 0.5  # a placement scoring less (normalised cross-correlation) is no placement
MIN_NCC = 0.90  # the placed pair's correlation (a caption strip left out) below which it is no alignment
UNIQUE_MARGIN = 0.02  # a crop is placed only when no spot AWAY from its place scores within this of it
AWAY = 0.15  # ... "away": more than this share of the crop's width or height from it
COMPARE_PX = 96  # the placed pair's correlation is measured at this many pixels square
# (pixels square, blocks per side, mean absolute difference 0-255 above which a block differs); the limits are set
# from the benchmark's tune half (bench/duplicates.py): the largest difference of a true copy there was 13.5 (coarse)
# and 18.2 (fine), and a different picture that passed the coarse scale (clocks, cards) differs by 21-29 at the fine one
SCALES = ((96, 8, 14.0), (64, 16, 20.0))
BAND_SHARE = 0.25  # a differing strip along the top or bottom up to this share deep is a caption, not a change
BAND_SPAN = 0.5  # ... when it spans at least this share of the picture's width
BORDER_TOLERANCE = 24  # a border pixel within this (0-255, luminance of the difference) of the corner colour is border
MIN_CONTENT_PX = 8  # content smaller than this (after trimming) is too small to verify
MIN_DETAIL = 8.0  # content whose colours vary less than this (standard deviation, 0-255) is too plain to verify:
# a flag's red band left after its white bands were trimmed fits inside any red


@dataclass
class Sketch:
    """What verification needs of one image, computed once per image (a few tens of KB)."""
    rgb: np.ndarray  # (h, w, 3) uint8: the content (border trimmed), long side <= SIDE
    width: int  # the original image's pixel size
    height: int
    border: float  # share of the original's area that was uniform border, trimmed
    detail: float  # how much the content varies (_detail)


@dataclass
class Verdict:
    same: bool
    edits: list[str] = field(default_factory=list)  # of B relative to A: scaled, cropped, border, band
    coverage: float = 0.0  # share of the larger content's width (and height) the smaller one spans
    ncc: float = 0.0  # normalised cross-correlation of the alignment
    worst_block: float = 0.0  # the largest block difference outside an allowed band, as a share of its limit (1 = at it)
    why: str = ""

    def evidence(self) -> dict:
        return {"edits": self.edits, "coverage": round(self.coverage, 3), "ncc": round(self.ncc, 3),
                "block_diff_of_limit": round(self.worst_block, 2), "why": self.why}


def sketch_of(im: Image.Image, width: int | None = None, height: int | None = None) -> Sketch:
    """The sketch of an RGB image (already reduced is fine: pass the original's `width`, `height`)."""
    im = im.convert("RGB")
    if max(im.size) > 4 * SIDE:
        im = im.copy()
        im.thumbnail((4 * SIDE, 4 * SIDE), Image.Resampling.BOX)
    box = _content_box(im)
    full = im.size[0] * im.size[1]
    border = 1.0 - (box[2] - box[0]) * (box[3] - box[1]) / full if full else 0.0
    content = im.crop(box)
    content.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    rgb = np.asarray(content, dtype=np.uint8)
    return Sketch(rgb, width or im.size[0], height or im.size[1], round(border, 4), _detail(rgb))


def _content_box(im: Image.Image) -> tuple[int, int, int, int]:
    """The box inside uniform borders: a frame or letterbox bars (the corners' colour all round the edge), then the
    picture's own plain background inside it (a drawing on white framed in black), or the whole image."""
    x0, y0, x1, y1 = _inside_border(im)
    if (x0, y0, x1, y1) != (0, 0, *im.size):
        a0, b0, a1, b1 = _inside_border(im.crop((x0, y0, x1, y1)))
        x0, y0, x1, y1 = x0 + a0, y0 + b0, x0 + a1, y0 + b1
    return x0, y0, x1, y1


def _inside_border(im: Image.Image) -> tuple[int, int, int, int]:
    arr = np.asarray(im)
    corners = np.stack([arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]]).astype(np.int16)
    bg = tuple(int(v) for v in np.median(corners, axis=0))
    diff = ImageChops.difference(im, Image.new("RGB", im.size, bg)).convert("L")
    box = diff.point(lambda v: 255 if v > BORDER_TOLERANCE else 0).getbbox()
    if box is None or (box[2] - box[0]) < MIN_CONTENT_PX or (box[3] - box[1]) < MIN_CONTENT_PX:
        return (0, 0, im.size[0], im.size[1])
    return box


def same_picture(a: Sketch, b: Sketch) -> Verdict:
    """Whether b is a (possibly scaled, re-encoded, cropped, bordered or captioned) copy of a, or a of b."""
    import cv2

    if min(a.rgb.shape[:2]) < MIN_CONTENT_PX or min(b.rgb.shape[:2]) < MIN_CONTENT_PX:
        return Verdict(False, why="too small to verify")
    if min(a.detail, b.detail) < MIN_DETAIL:
        return Verdict(False, why="too plain to verify")
    best = None
    for big, small in ((a.rgb, b.rgb), (b.rgb, a.rgb)):
        got = _align(cv2, big, small)
        if got is not None and (best is None or got[0] > best[0]):
            best = (*got, big, small)
    if best is None or best[0] < PLACE_MIN_NCC:
        return Verdict(False, ncc=0.0 if best is None else best[0], why="no alignment")
    _, coverage, (x, y, w, h), margin, big, small = best
    region = big[y:y + h, x:x + w]
    ncc = _ncc_but_a_strip(cv2, region, small)
    if ncc < MIN_NCC:
        return Verdict(False, coverage=coverage, ncc=ncc, why="no alignment")
    worst, band, over = _compare(cv2, region, small)
    edits = []
    if (a.width, a.height) != (b.width, b.height):
        edits.append("scaled")
    if coverage < 0.97:
        edits.append("cropped")
        if margin < UNIQUE_MARGIN:
            return Verdict(False, edits, coverage, ncc, 0.0, "a plain pattern: where the crop lies is not determined")
    if abs(a.border - b.border) > 0.02:
        edits.append("border")
    if band:
        edits.append("band")
    if over:
        return Verdict(False, edits, coverage, ncc, worst, "differs inside the picture")
    return Verdict(True, edits, coverage, ncc, worst, "same picture")


def _align(cv2, big: np.ndarray, small: np.ndarray):
    """(ncc, coverage, (x, y, w, h) in big's pixels, how much better the place scored than any spot away from it)
    of the best placement of `small` inside `big`, or None."""
    gb, gs = _gray(big), _gray(small)
    H, W = gb.shape
    h0, w0 = gs.shape
    fit = min(W / w0, H / h0)  # small scaled to touch big's sides (coverage 1): coverage is along the touching side
    c = COARSE_SIDE / max(H, W)
    cb = cv2.resize(gb, (max(1, round(W * c)), max(1, round(H * c))), interpolation=cv2.INTER_AREA)
    coarse = []
    for cov in np.arange(1.0, MIN_COVERAGE - 1e-9, -COVERAGE_STEP):
        tw, th = round(w0 * fit * cov * c), round(h0 * fit * cov * c)
        if tw < 4 or th < 4 or tw > cb.shape[1] or th > cb.shape[0]:
            continue
        t = cv2.resize(gs, (tw, th), interpolation=cv2.INTER_AREA)
        if _flat(cv2, t):
            continue
        res = cv2.matchTemplate(cb, t, cv2.TM_CCOEFF_NORMED)
        _, score, _, loc = cv2.minMaxLoc(res)
        if np.isfinite(score):
            coarse.append((score, cov, loc, _runner_up(res, loc, max(1, round(AWAY * tw)), max(1, round(AWAY * th)))))
    if not coarse:
        return None
    coarse.sort(key=lambda r: -r[0])
    # refine the best few at full sketch size, around the coarse place, and the whole picture (coverage 1) always:
    # it wins unless a crop scores UNIQUE_MARGIN better (a striped flag's half-size copy also fits a stripe)
    tries = coarse[:3] + [r for r in coarse[3:] if r[1] >= 1.0]
    best = None
    for score0, cov, (cx, cy), second in tries:
        for cv_ in sorted({min(1.0, cov + dc) for dc in (-COVERAGE_STEP / 2, -COVERAGE_STEP / 4, 0.0,
                                                         COVERAGE_STEP / 4, COVERAGE_STEP / 2)}):
            tw, th = round(w0 * fit * cv_), round(h0 * fit * cv_)
            if tw > W or th > H or tw < MIN_CONTENT_PX or th < MIN_CONTENT_PX:
                continue
            t = cv2.resize(gs, (tw, th), interpolation=cv2.INTER_AREA)
            if _flat(cv2, t):
                continue
            x0, y0 = round(cx / c), round(cy / c)
            pad = round(2 / c)
            xa, ya = max(0, x0 - pad), max(0, y0 - pad)
            xb, yb = min(W, x0 + pad + tw), min(H, y0 + pad + th)
            window = gb[ya:yb, xa:xb]
            if window.shape[0] < th or window.shape[1] < tw:
                continue
            res = cv2.matchTemplate(window, t, cv2.TM_CCOEFF_NORMED)
            _, score, _, (lx, ly) = cv2.minMaxLoc(res)
            if np.isfinite(score) and (best is None or _preferred(score, cv_, best[0], best[1])):
                best = (float(score), float(cv_), (xa + lx, ya + ly, tw, th), float(score0 - second))
    return best


def _preferred(score: float, coverage: float, best_score: float, best_coverage: float) -> bool:
    """Whether a placement beats the best so far: the higher score, a whole-picture placement counted UNIQUE_MARGIN
    up (the fewest edits that explain the pair)."""
    bonus = lambda cov: UNIQUE_MARGIN if cov >= 0.97 else 0.0  # noqa: E731
    return score + bonus(coverage) > best_score + bonus(best_coverage)


def _flat(cv2, t: np.ndarray) -> bool:
    """A template with no contrast (correlation is undefined on it); OpenCV's meanStdDev is ~20x numpy's std here."""
    return float(cv2.meanStdDev(t)[1][0, 0]) < 1.0


def _runner_up(res: np.ndarray, loc: tuple[int, int], dx: int, dy: int) -> float:
    """The best score of a matchTemplate map away from its peak at `loc` (-1 where the map has no such spot): a
    plain pattern (a striped flag, a gradient) scores as well a stripe further on, a photo's crop does not."""
    x, y = loc
    away = np.ones(res.shape, dtype=bool)
    away[max(0, y - dy):y + dy + 1, max(0, x - dx):x + dx + 1] = False
    return float(res[away].max()) if away.any() else -1.0


def _detail(rgb: np.ndarray) -> float:
    """How much a picture varies: the largest standard deviation of its three colours (a red flag's green star
    shows in red and green, not in grey)."""
    return float(rgb.reshape(-1, 3).std(axis=0).max())


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))


def _ncc_but_a_strip(cv2, region: np.ndarray, small: np.ndarray) -> float:
    """The aligned pair's normalised cross-correlation (grey), the whole or without a caption-deep strip at the
    top or the bottom, whichever is highest: a caption strip must not hide an otherwise exact match."""
    side = (COMPARE_PX, COMPARE_PX)
    a = _gray(cv2.resize(region, side, interpolation=cv2.INTER_AREA))
    b = _gray(cv2.resize(small, side, interpolation=cv2.INTER_AREA))
    strip = round(COMPARE_PX * BAND_SHARE)

    def ncc(x: np.ndarray, y: np.ndarray) -> float:
        x, y = x - x.mean(), y - y.mean()
        den = float(np.sqrt((x * x).sum() * (y * y).sum()))
        return float((x * y).sum() / den) if den > 0 else (1.0 if np.allclose(x, y) else 0.0)

    return max(ncc(a, b), ncc(a[strip:], b[strip:]), ncc(a[:-strip], b[:-strip]))


def _outside(cv2, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far each pixel of a lies outside the min-max of b's 3 x 3 neighbourhood (per channel)."""
    kernel = np.ones((3, 3), np.uint8)
    lo, hi = cv2.erode(b, kernel), cv2.dilate(b, kernel)
    return np.maximum(np.maximum(a - hi, lo - a), 0).astype(np.float32)


def _compare(cv2, region: np.ndarray, small: np.ndarray) -> tuple[float, bool, bool]:
    """(the largest block difference outside an allowed edge band, as a share of its scale's limit; whether a band
    was allowed; whether a block differs) of two aligned pictures, at each of SCALES. A pixel's difference is how far
    it lies outside the range of the other picture's pixels around it (3 x 3), both ways: resampling moves thin lines
    and edges by a pixel, which that forgives; a changed detail (a star's points, a clock's hands) it does not. A
    band found at one scale (a caption spanning its blocks) is left out at every scale."""
    found = []
    for px, grid, limit in SCALES:
        side = (px, px)
        a = cv2.resize(region, side, interpolation=cv2.INTER_AREA).astype(np.int16)
        b = cv2.resize(small, side, interpolation=cv2.INTER_AREA).astype(np.int16)
        diff = (_outside(cv2, a, b) + _outside(cv2, b, a)).mean(axis=2) / 2
        cell = px // grid
        found.append((diff.reshape(grid, cell, grid, cell).mean(axis=(1, 3)), limit))
    band = None
    for blocks, limit in found:  # the first scale at which a caption-like band explains what differs
        band = _caption_band(blocks, limit)
        if band:
            break
    worst = max(float((np.delete(blocks, _band_rows(len(blocks), band), axis=0) if band else blocks).max()) / limit
                for blocks, limit in found)
    return round(worst, 3), band is not None, worst > 1.0


def _band_rows(grid: int, where: str) -> np.ndarray:
    depth = max(1, round(grid * BAND_SHARE))
    return np.arange(depth) if where == "top" else np.arange(grid - depth, grid)


def _caption_band(blocks: np.ndarray, limit: float) -> str | None:
    """The band along the top or bottom ("top", "bottom") whose leaving out brings every other block within
    `limit`, when its outer row differs across the picture like a caption strip; None where no block differs or no
    band explains it."""
    over = blocks > limit
    if not over.any():
        return None
    for where in ("top", "bottom"):
        rows = _band_rows(blocks.shape[0], where)
        if over[rows[0] if where == "top" else rows[-1]].mean() < BAND_SPAN:  # a caption spans the picture; a
            continue  # changed detail does not
        if float(np.delete(blocks, rows, axis=0).max()) <= limit:
            return where
    return None


class Sketches:
    """The sketches of a collection's images by row number, read from their URIs on first use and kept (at most
    `keep` of them, least recently used dropped: a sketch is a few tens of KB). A file that cannot be read or
    decoded any more gives its reason instead, and is not retried."""

    def __init__(self, uris: list[str], read: Callable[[str], bytes], max_pixels: int, keep: int = 20_000):
        self.uris, self.read, self.max_pixels, self.keep = uris, read, max_pixels, keep
        self._cache: OrderedDict[int, Sketch] = OrderedDict()
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()

    def get(self, row: int) -> Sketch | None:
        with self._lock:
            if row in self._cache:
                self._cache.move_to_end(row)
                return self._cache[row]
            if row in self.failed:
                return None
        from imgsearch.imaging import DecodeError, decode_reduced

        try:
            im, w, h = decode_reduced(self.read(self.uris[row]), 4 * SIDE, self.max_pixels)
            sk = sketch_of(im, w, h)
        except (OSError, DecodeError) as exc:
            with self._lock:
                self.failed[row] = str(exc) or type(exc).__name__
            return None
        with self._lock:
            self._cache[row] = sk
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return sk

    def verify(self, i: int, j: int) -> Verdict | None:
        """same_picture of rows i and j, or None when either cannot be read (see `failed`)."""
        a, b = self.get(i), self.get(j)
        return None if a is None or b is None else same_picture(a, b)


def copies_of(query: bytes, uris: list[str], read: Callable[[str], bytes], max_pixels: int) -> list[Verdict | None]:
    """For a search by image: whether each candidate (an indexed image, by URI) is the same picture as the query's
    bytes; None where a candidate cannot be read now. The query is decoded once."""
    from concurrent.futures import ThreadPoolExecutor

    sketches = Sketches(["", *uris], lambda uri: query if uri == "" else read(uri), max_pixels)
    if sketches.get(0) is None or not uris:
        return [None] * len(uris)
    with ThreadPoolExecutor(min(len(uris), max(1, min(4, os.cpu_count() or 1)))) as pool:  # decode releases the GIL
        return list(pool.map(lambda i: sketches.verify(0, i), range(1, len(uris) + 1)))
