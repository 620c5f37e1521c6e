"""Hostile inputs: every bad file is recorded with its reason, every good one indexed, exit code 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import build_hostile, settings
from helpers import copy_photos, run_cli
from imgsearch.sources import image_id, path_to_uri
from imgsearch.store import open_store

pytestmark = pytest.mark.slow

DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
            "--inh-caps", "-dac_override,-dac_read_search"]


def _prefix() -> list[str]:
    """As root, run the CLI without the capabilities that let root read any file, so that a file without read
    permission really cannot be read (as for any user)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a permission-denied file cannot be simulated")
    return DROP_DAC


@pytest.fixture(scope="module")
def hostile_run(photo_paths):
    work = Path(tempfile.mkdtemp(prefix="imgsearch-hostile-"))
    src = work / "corpus"
    expect = build_hostile(src, photo_paths)
    cmd = _prefix() + [sys.executable, "-m", "imgsearch"]
    db = work / "hostile.db"
    res = subprocess.run(cmd + ["index", str(src), "--db", str(db)], capture_output=True, text=True, timeout=600)
    fails = subprocess.run(cmd + ["failures", "--db", str(db), "--json"], capture_output=True, text=True, timeout=120)
    yield src, db, expect, res, fails
    os.chmod(src / "unreadable.jpg", 0o644)
    shutil.rmtree(work, ignore_errors=True)


def _uri(src: Path, rel: bytes) -> str:
    return path_to_uri(os.path.join(os.fsencode(src), rel))


def test_every_hostile_file_recorded_every_good_one_indexed(hostile_run):
    src, db, expect, res, fails = hostile_run
    assert res.returncode == 0, res.stderr
    bad = {rel: why for rel, why in expect.items() if why not in (None, "skipped")}
    assert f"warning: {len(bad)} files failed" in res.stderr, res.stderr
    assert "skipped 1 files" in res.stderr  # notes.txt
    assert fails.returncode == 0, fails.stderr
    recorded = {r["path"]: r["error"] for r in json.loads(fails.stdout)}
    assert set(recorded) == {_uri(src, rel) for rel in bad}, recorded
    for rel, why in bad.items():
        assert why in recorded[_uri(src, rel)], (rel, recorded[_uri(src, rel)])
    good = [rel for rel, why in expect.items() if why is None]
    ids = {image_id(_uri(src, rel)) for rel in good}
    with open_store(str(db), settings()) as store:
        info = store.collection_for(None)
        rows = store.get(info, sorted(ids))
        assert {r["id"] for r in rows} == ids and info.count == len(ids)
        by_id = {r["id"]: r for r in rows}
    rotated = by_id[image_id(_uri(src, b"exif_rotated.jpg"))]
    plain = by_id[image_id(_uri(src, b"cmyk.jpg"))]
    assert (rotated["width"], rotated["height"]) == (plain["height"], plain["width"])  # EXIF rotation applied


def test_failures_listing_is_readable_text(hostile_run):
    src, db, expect, res, _ = hostile_run
    text = run_cli("failures", "--db", str(db))
    assert text.returncode == 0
    assert "truncated.jpg\t" in text.stdout and "too large" in text.stdout
    assert text.stdout.count("\n") == sum(1 for w in expect.values() if w not in (None, "skipped"))


def test_file_deleted_while_job_runs(tmp_path, photo_paths, monkeypatch):
    """The listing sees a file that is gone when the engine reads it: recorded as such, the rest indexed; a
    --sync rerun then forgets it."""
    from imgsearch import pipeline
    from imgsearch.engines import base

    src = copy_photos(photo_paths[:6], tmp_path / "src")
    victim = src / photo_paths[2].name
    real = base.list_images

    def list_then_delete(*a, **kw):
        yield from real(*a, **kw)
        victim.unlink()

    monkeypatch.setattr(base, "list_images", list_then_delete)
    db = str(tmp_path / "d.db")
    rep = pipeline.index(str(src), db, "efficientnet_lite0", settings(), progress=False)
    assert rep.embed.embedded == 5 and rep.embed.failures == [(path_to_uri(victim), "file disappeared before it "
                                                                                   "could be read")]
    monkeypatch.setattr(base, "list_images", real)
    again = pipeline.index(str(src), db, "efficientnet_lite0", settings(), progress=False, sync=True)
    assert again.embed.removed == 1 and again.embed.unchanged == 5
    assert pipeline.failures(db, settings()) == []
