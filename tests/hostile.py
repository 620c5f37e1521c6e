"""A hostile corpus, generated (never committed): every kind of file a real collection throws at an indexer.

`build(folder, photos)` writes it next to copies of real photos and returns {relative name (bytes): expected}, where
expected is None for a file that must be indexed, or a fragment of the reason it must be recorded as failed.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of width x height pixels in ~100 KB, written chunk by chunk (nothing big in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row * 1000) for _ in range(height // 1000)) + comp.compress(row * (height % 1000))
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def build(folder: Path, photos: list[Path]) -> dict[bytes, str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[bytes, str | None] = {}
    for p in photos:
        shutil.copy(p, folder / p.name)
        expect[p.name.encode()] = None
    rgb = Image.open(photos[0]).convert("RGB")
    jpeg = _save(rgb, "JPEG", quality=90)
    png = _save(rgb, "PNG")

    def put(name: bytes | str, data: bytes, expected: str | None) -> None:
        raw = name.encode() if isinstance(name, str) else name
        path = os.path.join(os.fsencode(folder), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        expect[raw] = expected

    # broken files: recorded with a reason
    put("truncated.jpg", jpeg[: len(jpeg) // 3], "JPEG")
    put("truncated.png", png[: len(png) // 2], "PNG")
    put("zero.jpg", b"", "empty file")
    put("text.jpg", b"this is a text file named like a JPEG\n", "not an image")
    put("bomb.png", png_bomb(), "too large")
    # unusual but valid files: indexed
    put("cmyk.jpg", _save(rgb.convert("CMYK"), "JPEG", quality=90), None)
    g16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    put("gray16.png", _save(Image.fromarray(g16.astype(np.uint16)), "PNG"), None)
    put("bilevel.png", _save(rgb.convert("1"), "PNG"), None)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    put("palette_alpha.png", _save(pal, "PNG", transparency=0), None)
    frames = [rgb.resize((160, 120)), rgb.resize((160, 120)).rotate(180)]
    put("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0), None)
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif_rotated.jpg", _save(rgb, "JPEG", quality=90, exif=exif.tobytes()), None)
    put("photo.webp", _save(rgb, "WEBP", quality=80), None)
    put("photo.tif", _save(rgb, "TIFF"), None)
    put("x.jpg/inside.jpg", jpeg, None)  # a folder named like an image is a folder: its files are indexed
    put(b"caf\xe9-latin1-name.jpg", jpeg, None)  # not valid UTF-8
    put("n" * 240 + ".jpg", jpeg, None)  # near NAME_MAX
    deep = "/".join(["d" * 60] * 20)  # a path over 1,200 characters
    put(deep + "/deep.jpg", jpeg, None)
    put("notes.txt", b"not an image by name or content\n", "skipped")
    # files that cannot be read
    put("unreadable.jpg", jpeg, "permission denied")
    os.chmod(folder / "unreadable.jpg", 0)
    os.symlink("loop.jpg", folder / "loop.jpg")  # a symlink loop
    expect[b"loop.jpg"] = "symbolic links"
    os.symlink(".", folder / "self-dir")  # a folder symlink loop: not followed
    return expect
