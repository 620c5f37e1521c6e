"""Near-duplicate groups: the command on real photos at several sizes and qualities, with look-alikes that are other
pictures (frames of a burst), verified by default; the cosine-only groups on request (unit cases: unit/)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from PIL import Image

from helpers import copy_photos, run_cli
from imgsearch.duplicates import pair_scores
from imgsearch.samples import write_variants
from imgsearch.sources import path_to_uri


@pytest.mark.slow
def test_duplicates_command_finds_the_groups(tmp_path, photo_paths):
    src = copy_photos(photo_paths[:-1], tmp_path / "src")
    kinds = ("resize50", "resize25", "jpeg40", "jpeg30", "crop90")
    made = write_variants(photo_paths[:-1], src / "copies", kinds=kinds)
    with Image.open(photo_paths[-1]) as im:  # two frames of a burst: one scene, neither inside the other (nor the
        # whole photo in the set: a crop of a photo that is there would be a copy of it)
        w, h = im.size
        im.convert("RGB").crop((0, 0, int(w * 0.7), int(h * 0.7))).save(src / "burst_a.png")
        im.convert("RGB").crop((w - int(w * 0.7), h - int(h * 0.7), w, h)).save(src / "burst_b.png")
    (src / "same_bytes.png").write_bytes(photo_paths[1].read_bytes())  # an identical file
    db = str(tmp_path / "dup.db")
    assert run_cli("index", str(src), "--db", db).returncode == 0
    res = run_cli("duplicates", "--db", db, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    predicted = [[im["path"] for im in g["images"]] for g in out["groups"]]
    truth = [[path_to_uri(src / orig.name)] + [path_to_uri(c) for c in copies] for orig, copies in made.items()]
    truth[1].append(path_to_uri(src / "same_bytes.png"))
    scores = pair_scores(predicted, truth)
    print(f"\nverified duplicates: {len(predicted)} groups for {len(truth)} photos x {len(kinds) + 1} versions; "
          f"pairwise precision {scores['precision']:.3f}, recall {scores['recall']:.3f}")
    assert scores["precision"] >= 0.99 and scores["recall"] >= 0.95, scores
    for g in out["groups"]:  # the largest version comes first, verified against it; the largest is proposed to keep
        pixels = [im["width"] * im["height"] for im in g["images"]]
        assert pixels[0] == max(pixels) and g["images"][0]["path"] == g["representative"]
        kept = next(im for im in g["images"] if im["path"] == g["keep"])
        assert kept["width"] * kept["height"] == max(pixels)
        if not g["keep"].endswith("/src/" + photo_paths[1].name):  # the identical copy is newer than its original
            assert g["keep"] == g["representative"]
        assert g["images"][0]["relation"] == "representative"
        assert all(im["relation"] in ("copy", "identical") and "evidence" in im for im in g["images"][1:])
    twin = next(g for g in out["groups"] if path_to_uri(src / "same_bytes.png") in [im["path"] for im in g["images"]])
    assert twin["keep"] == path_to_uri(src / photo_paths[1].name)  # same pixels and bytes: the older file
    assert [im["relation"] for im in twin["images"] if im["path"].endswith("same_bytes.png")] == ["identical"] or \
        twin["images"][0]["path"].endswith("same_bytes.png")
    assert out["verified"] and out["candidates"] >= out["verifications"] // 4 and out["skipped"] == []
    ann = run_cli("duplicates", "--db", db, "--json", "--method", "ann")  # the path big collections take
    assert ann.returncode == 0, ann.stderr
    got = json.loads(ann.stdout)
    assert got["method"] == "ann" and got["search"]["recall"] == 1.0
    assert [[im["id"] for im in g["images"]] for g in got["groups"]] == \
        [[im["id"] for im in g["images"]] for g in out["groups"]]
    text = run_cli("duplicates", "--db", db)
    assert text.returncode == 0 and "images are copies of another" in text.stderr and "keep " in text.stdout
    cosine = run_cli("duplicates", "--db", db, "--no-verify", "--threshold", "0.9")
    assert cosine.returncode == 0 and "groups of near-duplicates" in cosine.stderr
    # "is this a copy?": a search with a new edited copy names the indexed versions of that picture, and only them
    query = tmp_path / "query.jpg"
    with Image.open(photo_paths[2]) as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(query, quality=60)
    hits = json.loads(run_cli("search", str(query), "--db", db, "-k", "10", "--json").stdout)
    same = {h["path"] for h in hits if "same_picture" in h}
    versions = {path_to_uri(src / photo_paths[2].name)} | {path_to_uri(c) for c in made[photo_paths[2]]}
    assert same <= versions and len(same) >= min(len(versions), 10) - 1, (same, versions)
    assert all("scaled" in h["same_picture"]["edits"] for h in hits if h["path"] == path_to_uri(src / photo_paths[2].name))
    table = run_cli("search", str(query), "--db", db, "-k", "5")
    assert "copies of this picture" in table.stdout and "same picture" in table.stdout, table.stdout


@pytest.mark.slow
def test_an_original_gone_at_verification_is_skipped_with_its_reason(tmp_path, photo_paths):
    src = copy_photos(photo_paths[:6], tmp_path / "src")
    made = write_variants(sorted(src.iterdir()), src / "copies", kinds=("resize50", "jpeg40"))
    db = str(tmp_path / "dup.db")
    assert run_cli("index", str(src), "--db", db).returncode == 0
    gone = sorted(made)[0]
    gone.unlink()  # deleted since it was indexed
    res = run_cli("duplicates", "--db", db, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [s["path"] for s in out["skipped"]] == [path_to_uri(gone)] and "No such file" in out["skipped"][0]["reason"]
    grouped = sorted(sorted(im["path"] for im in g["images"]) for g in out["groups"])
    want = sorted(sorted([path_to_uri(o)] + [path_to_uri(c) for c in made[o]]) for o in made if o != gone)
    assert grouped == sorted(want + [sorted(path_to_uri(c) for c in made[gone])])  # its copies still group together


@pytest.mark.slow
def test_of_identical_files_the_oldest_is_proposed_to_keep(tmp_path, photo_paths):
    """Same pixels, same size: the date decides (a copy is made after its original), whether the rows come from the
    embeddings dataset or from Milvus."""
    import os
    import shutil

    from helpers import settings
    from imgsearch import pipeline
    from imgsearch.layout import embeddings_root_for

    src = tmp_path / "src"
    src.mkdir()
    for name, year in (("a.png", 2024), ("b.png", 2020), ("c.png", 2022)):
        shutil.copy(photo_paths[0], src / name)
        when = datetime(year, 5, 1, tzinfo=timezone.utc).timestamp()
        os.utime(src / name, (when, when))
    shutil.copy(photo_paths[1], src / "other.png")
    db = str(tmp_path / "keep.db")
    pipeline.index(str(src), db, "efficientnet_lite0", settings(), progress=False)
    for source in ("dataset", "milvus"):
        if source == "milvus":
            shutil.rmtree(embeddings_root_for(db, settings()))
        got = pipeline.duplicates(db, settings(), progress=False)
        assert got["source"] == source and len(got["groups"]) == 1, got
        g = got["groups"][0]
        assert g["kind"] == "identical" and g["size"] == 3 and g["keep"] == path_to_uri(src / "b.png"), (source, g)
