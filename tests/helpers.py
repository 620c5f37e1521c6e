"""Shared test helpers, in one module: real photos copied into folders, indexing, the CLI in a fresh process,
the settings tests run with, a tiny registered model for fast unit tests, and the hostile corpus.

The hostile corpus is generated (never committed): every kind of file a real collection throws at an indexer.
`build_hostile(folder, photos)` writes it next to copies of real photos and returns {relative name (bytes):
expected}, where expected is None for a file that must be indexed, or a fragment of the reason it must be recorded
as failed.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from imgsearch.config import Settings
from imgsearch.sources import FileRecord, image_id

REPO = Path(__file__).resolve().parents[1]  # the repository root
TINY_MODEL = "test_tiny"


def settings(**overrides) -> Settings:
    """Settings as the CLI would build them from the environment, with overrides."""
    return Settings(**overrides)


def copy_photos(paths, dest: Path) -> Path:
    """Copy photos into a (new) folder and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, dest / p.name)
    return dest


def index_photos(tmp_path_factory, photo_paths, name: str) -> tuple[Path, Path]:
    """Copy the sample photos into a fresh folder and index them into a fresh Milvus Lite file: (db, folder)."""
    from imgsearch import pipeline

    work = tmp_path_factory.mktemp(name)
    src = copy_photos(photo_paths, work / "photos")
    db = work / f"{name}.db"
    pipeline.index(str(src), str(db), "efficientnet_lite0", settings(), progress=False)
    return db, src


def run_cli(*args: str, env: dict | None = None, cwd: str | Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed command line in a fresh process, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "imgsearch", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


def make_table(n=5, dim=8, failed=(2,)):
    """A small dataset table of random vectors (row `i` is id{i}); rows in `failed` are failures."""
    from datetime import datetime, timezone

    from imgsearch import dataset as dset

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    cols = dset.empty_columns()
    vectors = []
    for i in range(n):
        cols["id"].append(f"id{i}")
        cols["path"].append(f"file:///x/{i}.jpg")
        cols["model"].append("m")
        cols["dim"].append(dim)
        cols["bytes"].append(100 + i)
        cols["mtime"].append(datetime(2026, 1, 1, tzinfo=timezone.utc))
        bad = i in failed
        cols["width"].append(None if bad else 10)
        cols["height"].append(None if bad else 20)
        cols["format"].append(None if bad else "JPEG")
        cols["error"].append("empty file" if bad else None)
        vectors.append(None if bad else vecs[i])
    return dset.to_table(cols, vectors), vecs


# -- synthetic dataset state (no images, no model) -----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def synthetic_record(name: str, size: int = 100, mtime: datetime = T0, root: str = "file:///src") -> FileRecord:
    uri = f"{root}/{name}"
    return FileRecord(uri, image_id(uri), size, mtime)


def write_synthetic(folder, records, failed=()):
    """One part holding `records`: embedded rows (random unit vectors), or failures for names in `failed`."""
    from imgsearch import dataset as dset
    from imgsearch.core import Outcome, failure_table

    ok = [r for r in records if r.uri.rsplit("/", 1)[-1] not in failed]
    bad = [Outcome(r, error="truncated file") for r in records if r.uri.rsplit("/", 1)[-1] in failed]
    cols = dset.empty_columns()
    for r in ok:
        for k, v in (("id", r.id), ("path", r.uri), ("model", "m"), ("dim", 4), ("width", 1), ("height", 1),
                     ("bytes", r.size), ("mtime", r.mtime), ("format", "PNG"), ("error", None)):
            cols[k].append(v)
    vecs = list(np.eye(4, dtype=np.float32)[np.arange(len(ok)) % 4])
    tables = [dset.to_table(cols, vecs)] if ok else []
    if bad:
        tables.append(failure_table(bad, "m", 4))
    for t in tables:
        dset.write_part(t, folder)



def register_tiny_model() -> str:
    """A real (tiny) torch network in the model registry: 8-d vectors of per-channel means and spreads of a 32 px
    crop. Unit tests run engines and the core with it in milliseconds; what it computes is checkable by hand."""
    from imgsearch.imaging import Preprocess
    from imgsearch.models import ModelSpec, list_models, register_model

    if any(s.name == TINY_MODEL for s in list_models()):
        return TINY_MODEL

    def build(weights):
        import torch

        class Tiny(torch.nn.Module):
            def forward(self, x):
                mean = x.mean(dim=(2, 3))
                spread = x.std(dim=(2, 3))
                return torch.cat([mean, spread, mean[:, :1] - mean[:, 2:3], torch.ones_like(mean[:, :1])], dim=1)

        return Tiny()

    register_model(ModelSpec(name=TINY_MODEL, dim=8, prep=Preprocess(resize=36, crop=32), mean=(127.0,) * 3,
                             std=(128.0,) * 3, build=build, description="test-only: colour statistics"))
    return TINY_MODEL


# -- the hostile corpus -------------------------------------------------------------------------------------------



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


def build_hostile(folder: Path, photos: list[Path]) -> dict[bytes, str | None]:
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


# -- the engine contract ------------------------------------------------------------------------------------------

def contract_corpus(folder: Path, photos: list[Path]) -> Path:
    """Real photos, one truncated JPEG (a failure every engine must record) and a text file (skipped)."""
    copy_photos(photos, folder)
    (folder / "broken.jpg").write_bytes(photos[0].read_bytes()[:300] if photos[0].suffix == ".jpg"
                                        else _save(Image.open(photos[0]).convert("RGB"), "JPEG")[:300])
    (folder / "notes.txt").write_text("not an image")
    return folder


def check_engine_contract(engine: str, model: str, src: Path, work: Path, weights: Path | None = None) -> dict:
    """What every engine must do, checked through the Engine interface alone: list, embed planned records through
    the pipeline (incrementally), fit PCA moments, stream rows. Returns {id: vector} for cross-engine checks."""
    from imgsearch import dataset as dset
    from imgsearch import pipeline
    from imgsearch.engines import EngineOptions, create_engine
    from imgsearch.jobs import EmbedJob
    from imgsearch.models import get_spec
    from imgsearch.sources import path_to_uri

    s = settings()
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png") and p.name != "broken.jpg")
    out = work / f"{engine}-out"
    with create_engine(engine, s, EngineOptions(master="local[2]", partitions=2)) as eng:
        listing = eng.list(str(src))
        assert listing.root == path_to_uri(src)
        assert {r.uri for r in listing.records} == {path_to_uri(p) for p in [*photos, src / "broken.jpg"]}
        assert listing.skipped_non_images == 1 and not listing.unreadable
        assert all(r.size == (src / r.uri.rsplit("/", 1)[-1]).stat().st_size and r.mtime for r in listing.records)

        job = EmbedJob.from_settings(s, model, weights=str(weights) if weights else None, batch_size=4,
                                     progress=False)
        rep = pipeline.embed_with(eng, str(src), str(out), job)
        assert (rep.new, rep.embedded, rep.failed) == (len(photos) + 1, len(photos), 1), rep
        [(uri, reason)] = rep.failures
        assert uri == path_to_uri(src / "broken.jpg") and "truncated" in reason.lower(), reason
        again = pipeline.embed_with(eng, str(src), str(out), job)
        assert (again.embedded, again.unchanged, again.failed_unchanged) == (0, len(photos), 1), again

        rows = dset.open_dataset(out).to_table().to_pylist()
        assert len(rows) == len(photos) + 1 and {r["id"] for r in rows} == {r.id for r in listing.records}
        vectors = {r["id"]: np.asarray(r["vector"], np.float32) for r in rows if r["error"] is None}
        assert all(len(v) == get_spec(model).dim and abs(float(v @ v) - 1) < 1e-4 for v in vectors.values())
        # auto-tags: every embedded row of a tagging model has them (best first), no row of other models does
        tagged = [r["tags"] is not None and r["tag_scores"] == sorted(r["tag_scores"], reverse=True)
                  for r in rows if r["error"] is None]
        assert all(tagged) if get_spec(model).labels else not any(tagged)

        m = eng.fit_moments(str(out))
        x = np.stack(list(vectors.values())).astype(np.float64)
        assert m.n == len(x)
        np.testing.assert_allclose(m.total, x.sum(axis=0), atol=1e-6)
        np.testing.assert_allclose(m.gram, x.T @ x, atol=1e-6)

        streamed = list(eng.stream_rows(str(out), columns=("id", "vector"), batch_rows=3))
        assert all(b.schema.names == ["id", "vector"] and b.num_rows <= 3 for b in streamed)
        assert sorted(i for b in streamed for i in b.column("id").to_pylist()) == sorted(vectors)
    return vectors


def webapp_collection(work: Path, photo_paths: list[Path]) -> tuple[Path, Path]:
    """The web app's test collection: photos/a: 8 photos dated June 2020; photos/b: 8 photos dated March 2023, and
    b/deep: 3 edited copies of a b photo (near-duplicates) plus a file that is no image (a failure). Indexed."""
    from imgsearch import pipeline
    from imgsearch.samples import write_variants

    june_2020 = datetime(2020, 6, 15, 12, tzinfo=timezone.utc).timestamp()
    march_2023 = datetime(2023, 3, 1, 12, tzinfo=timezone.utc).timestamp()
    root = work / "photos"
    a = copy_photos(photo_paths[:8], root / "a")
    b = copy_photos(photo_paths[8:16], root / "b")
    deep = root / "b" / "deep"
    write_variants([b / photo_paths[8].name], deep, kinds=("crop90", "resize50", "jpeg40"))
    (deep / "broken.jpg").write_bytes(b"not an image at all")
    for folder, when in ((a, june_2020), (b, march_2023)):
        for p in folder.rglob("*"):
            if p.is_file():
                os.utime(p, (when, when))
    db = work / "web.db"
    pipeline.index(str(root), str(db), "efficientnet_lite0", settings(), progress=False)
    return db, root
