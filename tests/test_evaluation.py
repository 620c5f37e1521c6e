"""Evaluation metrics on tiny cases worked out by hand, and `imgsearch eval` on real folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import copy_photos, run_cli
from imgsearch.evaluation import ann_recall, labelled_metrics, near_dup_recall

# unit directions: a0 = (1, 0), a1 ~ (0.994, 0.110), b0 ~ (0.0995, 0.995), b1 = (0.707, 0.707)
VECS = np.array([[1, 0], [0.9, 0.1], [0.1, 1], [0.5, 0.5]], np.float32)


def test_labelled_metrics_by_hand():
    # cosines: a0-a1 .994, a0-b1 .707, a0-b0 .100, a1-b1 .781, a1-b0 .209, b0-b1 .774
    # rankings: a0 -> a1 b1 b0 (AP 1); a1 -> a0 b1 b0 (AP 1); b0 -> b1 a1 a0 (AP 1); b1 -> a1 b0 a0 (AP 1/2)
    m = labelled_metrics(VECS, ["A", "A", "B", "B"], ks=(1, 2))
    assert m["mAP"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert m["P@1"] == pytest.approx(0.75) and m["recall@1"] == pytest.approx(0.75)
    assert m["recall@2"] == pytest.approx(1.0) and m["queries"] == 4 and m["queries_without_a_match"] == 0


def test_near_dup_recall_by_hand():
    # q0 ~ (0.999, 0.050): nearest a0 (.999) then a1 (.998) -> its target a0 is first.
    # q1 ~ (0.737, 0.676): b1 .999, a1 .807, b0 .746 -> its target b0 is third.
    q = np.array([[1, 0.05], [0.6, 0.55]], np.float32)
    m = near_dup_recall(q, np.array([0, 2]), VECS, ks=(1, 2, 3))
    assert m == {"recall@1": 0.5, "recall@2": 0.5, "recall@3": 1.0}


def test_ann_recall_by_hand():
    assert ann_recall([["a", "b", "c"], ["x", "y", "z"]], [["a", "c", "d"], ["x", "y", "z"]], 3) == pytest.approx(
        (2 / 3 + 1) / 2)


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
