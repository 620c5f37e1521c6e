"""Near-duplicate groups: the command on real photos at several sizes and qualities (unit cases: unit/)."""

from __future__ import annotations

import json

import pytest

from helpers import copy_photos, run_cli
from imgsearch.duplicates import pair_scores
from imgsearch.samples import write_variants
from imgsearch.sources import path_to_uri


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
    ann = run_cli("duplicates", "--db", db, "--json", "--method", "ann")  # the path big collections take
    assert ann.returncode == 0, ann.stderr
    got = json.loads(ann.stdout)
    assert got["method"] == "ann" and got["search"]["recall"] == 1.0
    assert [[im["id"] for im in g["images"]] for g in got["groups"]] == \
        [[im["id"] for im in g["images"]] for g in out["groups"]]
    text = run_cli("duplicates", "--db", db, "--threshold", "0.9")
    assert text.returncode == 0 and "groups of near-duplicates" in text.stderr
