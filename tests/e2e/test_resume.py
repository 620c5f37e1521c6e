"""Incremental runs and kill -9 at random moments: only new work is done, nothing is lost or duplicated."""

from __future__ import annotations

import re
import shutil

import pytest

from imgsearch.testing import kill_cycles
from helpers import copy_photos, run_cli, settings
from imgsearch import samples
from imgsearch.sources import image_id, path_to_uri
from imgsearch.store import open_store

pytestmark = pytest.mark.slow

ROWS_PER_PART, BATCH = 16, 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    """221 real images: the 21 sample photos and 200 LFW face photos."""
    src = copy_photos(photo_paths, tmp_path_factory.mktemp("kill") / "images")
    samples.write_lfw_faces(src / "faces")
    return src


def test_kill9_at_random_moments_then_rerun_equals_clean_run(corpus, tmp_path):
    env = {"IMGSEARCH_BATCH_SIZE": str(BATCH), "IMGSEARCH_ROWS_PER_PART": str(ROWS_PER_PART),
           "IMGSEARCH_PART_SECONDS": "0.5"}
    r = kill_cycles(corpus, tmp_path, total=221, kills=5, seed=20261122, env=env)
    print({k: v for k, v in r.items() if not k.endswith("stderr")})
    assert r["kills"] >= 5, r["cycles"]
    assert r["final_returncode"] == 0, r["final_stderr"]
    assert r["clean_returncode"] == 0, r["clean_stderr"]
    assert r["ids_equal_clean_run"] and r["milvus_count"] == r["clean_count"] == 221
    assert r["milvus_unique_ids"] == 221 and r["dataset_rows"] == r["dataset_unique_ids"] == 221  # no duplicates
    assert r["min_cosine_vs_clean"] > 0.999
    # progress is kept: some kills landed after rows were committed, and a killed run loses at most the rows it had
    # not committed yet (< one part) plus the batch in hand
    assert any(c["killed"] and c["rows_committed"] > 0 for c in r["cycles"])
    assert 0 <= r["rows_redone"] <= r["kills"] * (ROWS_PER_PART + BATCH)


def _embedded(stderr: str) -> int:
    m = re.search(r"embedded (\d+) images", stderr)
    return int(m.group(1)) if m else 0


def test_incremental_add_modify_delete_noop(tmp_path, photo_paths):
    src, db = copy_photos(photo_paths[:12], tmp_path / "src"), str(tmp_path / "inc.db")
    first = run_cli("index", str(src), "--db", db)
    assert first.returncode == 0 and _embedded(first.stderr) == 12, first.stderr

    copy_photos(photo_paths[12:17], src)  # add 5
    added = run_cli("index", str(src), "--db", db)
    assert "5 new, 0 changed, 12 unchanged" in added.stderr and _embedded(added.stderr) == 5, added.stderr

    target = src / photo_paths[0].name  # modify 1: another photo's pixels under the same name
    shutil.copy(photo_paths[20], target)
    changed = run_cli("index", str(src), "--db", db)
    assert "0 new, 1 changed, 16 unchanged" in changed.stderr and _embedded(changed.stderr) == 1, changed.stderr
    hit = run_cli("search", str(photo_paths[20]), "--db", db, "-k", "1", "--json")
    assert path_to_uri(target) in hit.stdout  # the new content is what is indexed now

    gone = [src / photo_paths[3].name, src / photo_paths[4].name]  # delete 2
    for g in gone:
        g.unlink()
    no_sync = run_cli("index", str(src), "--db", db)
    assert "2 files are gone from the source but still indexed" in no_sync.stderr, no_sync.stderr
    synced = run_cli("index", str(src), "--db", db, "--sync")
    assert "2 removed" in synced.stderr and _embedded(synced.stderr) == 0, synced.stderr
    with open_store(db, settings()) as store:
        info = store.collection_for(None)
        assert info.count == 15
        assert store.get(info, [image_id(path_to_uri(g)) for g in gone]) == []
    for g, p in zip(gone, (photo_paths[3], photo_paths[4])):
        res = run_cli("search", str(p), "--db", db, "-k", "15", "--json")
        assert path_to_uri(g) not in res.stdout

    again = run_cli("index", str(src), "--db", db, "--sync")
    assert "nothing to embed: every file is up to date" in again.stderr and _embedded(again.stderr) == 0


def test_embed_out_is_incremental_too(tmp_path, photo_paths):
    from imgsearch import dataset as dset

    src, out = copy_photos(photo_paths[:3], tmp_path / "src"), tmp_path / "emb"
    assert run_cli("embed", str(src), "--out", str(out)).returncode == 0
    shutil.copy(photo_paths[3], src / photo_paths[3].name)
    res = run_cli("embed", str(src), "--out", str(out))
    assert "1 new, 0 changed, 3 unchanged" in res.stderr and _embedded(res.stderr) == 1
    assert dset.summarize(out).rows == 4
    assert run_cli("embed", str(src), "--out", str(out), "--overwrite").returncode == 0
    assert dset.summarize(out).rows == 4
    other = run_cli("embed", str(src), "--out", str(out), "--model", "resnet50")
    assert other.returncode == 1 and "holds embeddings of efficientnet_lite0" in other.stderr


def test_repairs_a_collection_that_lost_vectors(tmp_path, photo_paths):
    """Milvus is rebuilt from the dataset: vectors deleted behind imgsearch's back come back on the next run."""
    src, db = copy_photos(photo_paths[:6], tmp_path / "src"), str(tmp_path / "rep.db")
    assert run_cli("index", str(src), "--db", db).returncode == 0
    lost = [image_id(path_to_uri(src / photo_paths[i].name)) for i in (1, 2)]
    with open_store(db, settings()) as store:
        store.delete(store.collection_for(None).name, lost)
    res = run_cli("index", str(src), "--db", db)
    assert "nothing to embed" in res.stderr and "indexed 2 images" in res.stdout, res.stdout + res.stderr
    with open_store(db, settings()) as store:
        info = store.collection_for(None)
        assert info.count == 6 and len(store.get(info, lost)) == 2


def test_a_run_syncs_only_its_own_source(tmp_path, photo_paths):
    """A dataset shared by two sources (one --out, or the one kept for a server URI that now answers with an empty
    server): indexing B must not pour A's images into B's database."""
    a = copy_photos(photo_paths[:3], tmp_path / "a")
    b = copy_photos(photo_paths[3:5], tmp_path / "b")
    out = str(tmp_path / "shared")
    assert run_cli("index", str(a), "--db", str(tmp_path / "one.db"), "--out", out).returncode == 0
    res = run_cli("index", str(b), "--db", str(tmp_path / "two.db"), "--out", out)
    assert res.returncode == 0, res.stderr
    with open_store(str(tmp_path / "two.db"), settings()) as store:
        info = store.collection_for(None)
        assert info.count == 2
        assert len(store.get(info, [image_id(path_to_uri(b / p.name)) for p in photo_paths[3:5]])) == 2
