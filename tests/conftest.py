"""Shared fixtures: real photos from installed packages, a loaded default model, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgsearch import samples


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory) -> Path:
    """The ~21 real sample photos (scikit-image + scikit-learn), copied into a session temp folder."""
    d = tmp_path_factory.mktemp("photos")
    samples.write_sample_photos(d)
    return d


@pytest.fixture(scope="session")
def photo_paths(photos_dir) -> list[Path]:
    return sorted(photos_dir.iterdir())


@pytest.fixture(scope="session")
def lite0():
    from imgsearch.models import create_model

    return create_model("efficientnet_lite0", device="cpu", precision="fp32")


def copy_photos(paths, dest: Path) -> Path:
    """Copy photos into a (new) folder and return it."""
    import shutil

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
    pipeline.index(str(src), str(db), "efficientnet_lite0", progress=False)
    return db, src


def run_cli(*args: str, env: dict | None = None, cwd: str | Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed command line in a fresh process, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "imgsearch", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
