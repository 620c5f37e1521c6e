"""Near-duplicate groups: unit cases by hand, and the command on real photos at several sizes and qualities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import copy_photos, run_cli
from imgsearch.duplicates import find_groups, pair_scores
from imgsearch.samples import write_variants
from imgsearch.sources import path_to_uri


def test_groups_are_connected_components():
    v = np.array([[1, 0, 0], [0.95, 0.31, 0], [0.8, 0.6, 0], [0, 0, 1], [0, 0.1, 1], [0, 1, 0]], np.float32)
    # cos(0,1) = 0.95/0.9993 = 0.9507 and cos(1,2) = 0.946/0.9993 = 0.9467 link; cos(0,2) = 0.8 does not, but 2
    # joins through 1. cos(3,4) = 0.995 links. 5 is alone.
    groups = find_groups(v, threshold=0.9, pixels=[1, 5, 2, 0, 0, 0])
    assert [g.members for g in groups] == [[1, 2, 0], [3, 4]]  # largest image first
    assert groups[0].min_link == pytest.approx(0.9467, abs=1e-4)
    assert find_groups(v, threshold=0.999) == []
    assert pair_scores([["a", "b", "c"]], [["a", "b"], ["c", "d"]]) == {
        "precision": 1 / 3, "recall": 1 / 2, "predicted_pairs": 3, "true_pairs": 2}


@pytest.mark.slow
def test_duplicates_command_finds_the_groups(tmp_path, photo_paths):
    src = copy_photos(photo_paths, tmp_path / "src")
    kinds = ("resize50", "resize25", "jpeg40", "jpeg30", "crop90")
    made = write_variants(photo_paths, src / "copies", kinds=kinds)
    db = str(tmp_path / "dup.db")
    assert run_cli("index", str(src), "--db", db).returncode == 0
    res = run_cli("duplicates", "--db", db, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    predicted = [[im["path"] for im in g["images"]] for g in out["groups"]]
    truth = [[path_to_uri(src / orig.name)] + [path_to_uri(c) for c in copies] for orig, copies in made.items()]
    scores = pair_scores(predicted, truth)
    print(f"\nduplicates at threshold {out['threshold']}: {len(predicted)} groups for {len(truth)} photos x "
          f"{len(kinds) + 1} versions; pairwise precision {scores['precision']:.3f}, recall {scores['recall']:.3f}")
    assert scores["precision"] >= 0.99 and scores["recall"] >= 0.95, scores
    for g in out["groups"]:  # the largest version comes first
        pixels = [im["width"] * im["height"] for im in g["images"]]
        assert pixels[0] == max(pixels)
    text = run_cli("duplicates", "--db", db, "--threshold", "0.9")
    assert text.returncode == 0 and "groups of near-duplicates" in text.stderr
