"""Evaluation metrics on tiny cases worked out by hand, and `imgsearch eval` on real folders."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import copy_photos, run_cli

@pytest.mark.slow
def test_eval_commands_on_real_folders(tmp_path, photo_paths):
    # unlabelled: near-duplicate retrieval of edited copies among the photos + 200 face photos as distractors
    from imgsearch.samples import write_lfw_faces

    photos = copy_photos(photo_paths, tmp_path / "photos")
    write_lfw_faces(tmp_path / "faces")
    res = run_cli("eval", "near-dup", str(photos), "--distractors", str(tmp_path / "faces"), "--json",
                  "--save", str(tmp_path / "nd.json"))
    assert res.returncode == 0, res.stderr
    nd = json.loads(res.stdout)
    assert nd == json.loads((tmp_path / "nd.json").read_text())
    assert nd["details"]["queries"] == 21 * 7 and nd["details"]["distractors"] == 200
    assert nd["recall@1"] >= 0.9 and nd["recall@5"] >= nd["recall@1"]
    assert set(nd["details"]["per_transform"]) == {"crop80", "resize50", "jpeg30", "rotate10", "rotate-10", "hflip",
                                                   "jitter"}
    # labelled: two classes (photos vs faces) given by sub-folders
    lab = tmp_path / "labelled"
    shutil.copytree(photos, lab / "photos")
    shutil.copytree(tmp_path / "faces", lab / "faces")
    res = run_cli("eval", "labelled", str(lab), "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["details"]["classes"] == 2 and m["queries"] == 221 and 0.5 < m["mAP"] <= 1 and m["P@1"] > 0.9
    table = run_cli("eval", "labelled", str(photos))
    assert table.returncode == 1 and "one sub-folder per class" in table.stderr
    # ANN vs exact on an index (FLAT on Lite: exact, so recall is 1)
    db = str(tmp_path / "e.db")
    assert run_cli("index", str(lab), "--db", db).returncode == 0
    ann = run_cli("eval", "ann", "--db", db, "--queries", "50", "--json")
    assert ann.returncode == 0, ann.stderr
    assert json.loads(ann.stdout)["recall@10"] == pytest.approx(1.0)
