"""Safe image decoding: bytes in, a fixed-size RGB uint8 array out, or a clear reason why not.

Everything that touches pixels lives here so that every engine (local, Spark) sees identical preprocessing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# We enforce our own pixel limit below (before any pixel is decoded); Pillow's own guard stays as a second line.
Image.MAX_IMAGE_PIXELS = None
# A truncated file is an error, never a half-grey image silently indexed.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Image formats recognised by their first bytes. Used by the sources stage to find images without trusting extensions.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"P1", 0, "PPM"), (b"P2", 0, "PPM"), (b"P3", 0, "PPM"),
    (b"P4", 0, "PPM"), (b"P5", 0, "PPM"), (b"P6", 0, "PPM"),
)
SNIFF_BYTES = 16

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .bmp .dib .tif .tiff .webp .ico .ppm .pgm .pbm .pnm .heic .heif .avif".split()
)


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes, or None if they match no known image format."""
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "WEBP" and head[:4] != b"RIFF":
                continue
            return name
    return None


class DecodeError(ValueError):
    """The bytes are not a usable image; the message is the reason recorded for the file."""


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: shorter side resized to `resize`, then a centre crop of `crop` x `crop`."""

    crop: int = 224
    resize: int = 256


@dataclass
class DecodedImage:
    pixels: np.ndarray  # (crop, crop, 3) uint8, RGB
    width: int  # original size, after EXIF orientation
    height: int
    format: str


def _open_guarded(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse empty input or more than `max_pixels` pixels before anything is decoded."""
    if not data:
        raise DecodeError("empty file")
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if w <= 0 or h <= 0:
        raise DecodeError(f"invalid image size {w}x{h}")
    if w * h > max_pixels:
        raise DecodeError(f"image too large: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
    return im


def decode_image(data: bytes, prep: Preprocess, max_pixels: int) -> DecodedImage:
    """Decode, orient, convert to RGB and resize+crop. Raises DecodeError with a short reason on any bad input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open_guarded(data, max_pixels)
            fmt = im.format or "unknown"
            w, h = im.size
            orientation = _exif_orientation(im)
            if fmt == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is much larger than needed.
                im.draft("RGB", (prep.resize, prep.resize))
            im.load()
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                im = ImageOps.exif_transpose(im)
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            pixels = _resize_center_crop(_to_resizable(im), prep)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        sniffed = sniff_format(data[:SNIFF_BYTES])
        if sniffed:
            raise DecodeError(f"cannot decode {sniffed}: corrupt or unsupported header") from None
        raise DecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError,
            MemoryError, Warning, ZeroDivisionError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise DecodeError(f"cannot decode {fmt_name(data)}: {reason}") from None
    return DecodedImage(pixels=pixels, width=w, height=h, format=fmt)


def fmt_name(data: bytes) -> str:
    return sniff_format(data[:SNIFF_BYTES]) or "image"


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not reject an otherwise fine photo
        return 1


def _to_resizable(im: Image.Image) -> Image.Image:
    """Any Pillow mode to one that resizes correctly and cheaply: L, RGB, or with transparency LA/RGBA (Pillow resizes
    those with premultiplied alpha). 16/32-bit and float are rescaled, not clipped. Colour conversion and compositing
    on white wait until after the resize (see _finish_rgb): on a large image that saves several full-size passes."""
    mode = im.mode
    if mode in ("RGB", "L", "RGBA", "LA") and "transparency" not in im.info:
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255) else 255.0
        if mode == "F":
            lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=1.0))
            arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        else:
            arr = arr * (255.0 / hi)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        return im.convert("LA" if mode in ("LA", "La", "L") else "RGBA")
    return im.convert("L" if mode == "1" else "RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB the way indexing sees it (transparency on white, 16-bit rescaled), full size."""
    return _finish_rgb(_to_resizable(im))


def _finish_rgb(im: Image.Image) -> Image.Image:
    """The resized image as 8-bit RGB, transparency composited on white."""
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _resize_center_crop(im: Image.Image, prep: Preprocess) -> np.ndarray:
    """Equivalent to 'shorter side -> resize, centre crop -> crop', done as one antialiased resize of the crop box."""
    w, h = im.size
    scale = prep.resize / min(w, h)
    # The crop box in source coordinates: a square of side crop/scale around the centre (clamped for thin images).
    side_w = min(w, prep.crop / scale)
    side_h = min(h, prep.crop / scale)
    left = (w - side_w) / 2
    top = (h - side_h) / 2
    out = im.resize(
        (prep.crop, prep.crop), Image.Resampling.BILINEAR, box=(left, top, left + side_w, top + side_h), reducing_gap=3.0
    )
    arr = np.asarray(_finish_rgb(out), dtype=np.uint8)
    if arr.shape != (prep.crop, prep.crop, 3):  # pragma: no cover - Pillow guarantees this for RGB
        raise DecodeError(f"unexpected decoded shape {arr.shape}")
    return arr


def decode_reduced(data: bytes, size: int, max_pixels: int) -> tuple[Image.Image, int, int]:
    """The image no larger than size x size (aspect kept), oriented and in RGB, with its original (oriented) width
    and height; the same guards as decode_image. What thumbnails and the near-duplicate verification look at."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open_guarded(data, max_pixels)
            w, h = im.size  # before draft(), which reduces it
            if im.format == "JPEG":
                im.draft("RGB", (size, size))
            if _exif_orientation(im) in (5, 6, 7, 8):
                w, h = h, w
            im.load()
            im = _to_resizable(ImageOps.exif_transpose(im))
            im.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return _finish_rgb(im), w, h
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except Exception as exc:  # every Pillow failure here means "cannot look at it"
        raise DecodeError(f"cannot decode image: {str(exc).strip() or type(exc).__name__}") from None


def make_thumbnail(data: bytes, size: int, max_pixels: int, quality: int = 85) -> bytes:
    """A JPEG no larger than size x size (aspect kept), oriented and in RGB, with the same guards as decode_image."""
    im, _, _ = decode_reduced(data, size, max_pixels)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
