"""Is image B the same picture as image A, edited? The verification stage of near-duplicates.

Embeddings find images that look alike; a flag and another flag, two clocks showing different times or two shots of a
burst look alike too, and no cosine threshold separates them from "the same photo, resized". This module decides
from the pixels, on small sketches of the two images:

1. a sketch: the image oriented, in RGB, its uniform border (letterbox, frame) trimmed, at most SIDE pixels long;
2. alignment: one sketch is searched inside the other at coverages 1.0 down to MIN_COVERAGE of its width or height
   (normalised cross-correlation, OpenCV's matchTemplate; coarse at COARSE_SIDE pixels, then refined): this finds
   resizes, re-encodes, crops that keep at least MIN_COVERAGE of each side and borders;
3. the decision: the placed pair compared block by block (GRID x GRID blocks, colour, lightly blurred): the same
   picture when no block differs by more than BLOCK_DIFF, except blocks in one band along an edge (a caption or a
   watermark strip across the top or bottom, at most BAND_BLOCKS deep). A change inside the picture (a clock's hands,
   a card's suit, another flag's emblem, an umlaut) makes it another picture.

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
GRID = 8  # blocks per side of the aligned comparison
BLOCK_PX = 12  # pixels per block side in the comparison
COMPARE_PX = GRID * BLOCK_PX  # the placed pair is compared at this many pixels square
BLOCK_DIFF = 14.0  # mean absolute difference (0-255, colour) above which a block differs
BAND_BLOCKS = 2  # a differing strip along the top or bottom up to this many blocks deep is a caption, not a change
BAND_SPAN = 0.5  # ... when it spans at least this share of the picture's width
BORDER_TOLERANCE = 24  # a border pixel within this (0-255, luminance of the difference) of the corner colour is border
MIN_CONTENT_PX = 8  # content smaller than this (after trimming) is too small to verify


@dataclass
class Sketch:
    """What verification needs of one image, computed once per image (a few tens of KB)."""
    rgb: np.ndarray  # (h, w, 3) uint8: the content (border trimmed), long side <= SIDE
    width: int  # the original image's pixel size
    height: int
    border: float  # share of the original's area that was uniform border, trimmed


@dataclass
class Verdict:
    same: bool
    edits: list[str] = field(default_factory=list)  # of B relative to A: scaled, cropped, border, band
    coverage: float = 0.0  # share of the larger content's width (and height) the smaller one spans
    ncc: float = 0.0  # normalised cross-correlation of the alignment
    worst_block: float = 0.0  # the largest block difference outside an allowed band
    why: str = ""

    def evidence(self) -> dict:
        return {"edits": self.edits, "coverage": round(self.coverage, 3), "ncc": round(self.ncc, 3),
                "worst_block_diff": round(self.worst_block, 1), "why": self.why}


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
    return Sketch(np.asarray(content, dtype=np.uint8), width or im.size[0], height or im.size[1], round(border, 4))


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
    best = None
    for big, small in ((a.rgb, b.rgb), (b.rgb, a.rgb)):
        got = _align(cv2, big, small)
        if got is not None and (best is None or got[0] > best[0]):
            best = (*got, big, small)
    if best is None or best[0] < PLACE_MIN_NCC:
        return Verdict(False, ncc=0.0 if best is None else best[0], why="no alignment")
    _, coverage, (x, y, w, h), big, small = best
    region = big[y:y + h, x:x + w]
    ncc = _ncc_but_a_strip(cv2, region, small)
    if ncc < MIN_NCC:
        return Verdict(False, coverage=coverage, ncc=ncc, why="no alignment")
    worst, band = _compare(cv2, region, small)
    edits = []
    if (a.width, a.height) != (b.width, b.height):
        edits.append("scaled")
    if coverage < 0.97:
        edits.append("cropped")
    if abs(a.border - b.border) > 0.02:
        edits.append("border")
    if band:
        edits.append("band")
    if worst > BLOCK_DIFF:
        return Verdict(False, edits, coverage, ncc, worst, "differs inside the picture")
    return Verdict(True, edits, coverage, ncc, worst, "same picture")


def _align(cv2, big: np.ndarray, small: np.ndarray):
    """(ncc, coverage, (x, y, w, h) in big's pixels) of the best placement of `small` inside `big`, or None."""
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
        if t.std() < 1.0:
            continue
        res = cv2.matchTemplate(cb, t, cv2.TM_CCOEFF_NORMED)
        _, score, _, loc = cv2.minMaxLoc(res)
        if np.isfinite(score):
            coarse.append((score, cov, loc))
    if not coarse:
        return None
    coarse.sort(key=lambda r: -r[0])
    best = None
    for _, cov, (cx, cy) in coarse[:3]:  # refine the best few at full sketch size, around the coarse place
        for dc in (-COVERAGE_STEP / 2, -COVERAGE_STEP / 4, 0.0, COVERAGE_STEP / 4, COVERAGE_STEP / 2):
            cv_ = min(1.0, cov + dc)
            tw, th = round(w0 * fit * cv_), round(h0 * fit * cv_)
            if tw > W or th > H or tw < MIN_CONTENT_PX or th < MIN_CONTENT_PX:
                continue
            t = cv2.resize(gs, (tw, th), interpolation=cv2.INTER_AREA)
            if t.std() < 1.0:
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
            if np.isfinite(score) and (best is None or score > best[0]):
                best = (float(score), float(cv_), (xa + lx, ya + ly, tw, th))
    return best


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))


def _ncc_but_a_strip(cv2, region: np.ndarray, small: np.ndarray) -> float:
    """The aligned pair's normalised cross-correlation (grey), the whole or without a caption-deep strip at the
    top or the bottom, whichever is highest: a caption strip must not hide an otherwise exact match."""
    side = (COMPARE_PX, COMPARE_PX)
    a = _gray(cv2.resize(region, side, interpolation=cv2.INTER_AREA))
    b = _gray(cv2.resize(small, side, interpolation=cv2.INTER_AREA))
    strip = BLOCK_PX * BAND_BLOCKS

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


def _compare(cv2, region: np.ndarray, small: np.ndarray) -> tuple[float, bool]:
    """(the largest block difference outside an allowed edge band, whether a band was allowed) of two aligned
    pictures, both resampled to GRID x GRID blocks of BLOCK_PX. A pixel's difference is how far it lies outside the
    range of the other picture's pixels around it (3 x 3), both ways: resampling moves thin lines and edges by a pixel,
    which that forgives; a changed detail (a star's points, a clock's hands) it does not."""
    side = (COMPARE_PX, COMPARE_PX)
    a = cv2.resize(region, side, interpolation=cv2.INTER_AREA).astype(np.int16)
    b = cv2.resize(small, side, interpolation=cv2.INTER_AREA).astype(np.int16)
    diff = (_outside(cv2, a, b) + _outside(cv2, b, a)).mean(axis=2) / 2
    blocks = diff.reshape(GRID, BLOCK_PX, GRID, BLOCK_PX).mean(axis=(1, 3))
    over = blocks > BLOCK_DIFF
    if not over.any():
        return float(blocks.max()), False
    best = float(blocks.max())
    for rows in (slice(0, BAND_BLOCKS), slice(GRID - BAND_BLOCKS, GRID)):  # a strip along the top or the bottom
        outer = 0 if rows.start == 0 else GRID - 1
        if over[outer].mean() < BAND_SPAN:  # a caption strip spans the picture; a changed detail does not
            continue
        rest = np.delete(blocks, np.arange(GRID)[rows], axis=0)
        if float(rest.max()) <= BLOCK_DIFF:
            return float(rest.max()), True
        best = min(best, float(rest.max()))
    return best, False


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
