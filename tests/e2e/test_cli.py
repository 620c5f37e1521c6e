"""The command line as a user meets it: real processes, exit codes, one-line errors, Milvus Lite files."""

import json
import shutil

import pytest

from imgsearch import dataset as dset
from imgsearch.sources import image_id, path_to_uri
from helpers import copy_photos, settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def messy_dir(tmp_path_factory, photo_paths):
    """Real photos plus a truncated JPEG, an empty file, text named .jpg, and a README that is not an image."""
    d = copy_photos(photo_paths, tmp_path_factory.mktemp("messy"))
    jpeg = (d / "sklearn_china.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("this is text, not a JPEG\n")
    (d / "README.txt").write_text("not an image, not named like one")
    return d


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, messy_dir):
    from helpers import run_cli

    work = tmp_path_factory.mktemp("idx")
    db, out = work / "imgsearch.db", work / "parquet"
    res = run_cli("index", str(messy_dir), "--db", str(db), "--out", str(out))
    return db, out, res


def test_index_records_bad_files_and_goes_on(indexed, messy_dir, photo_paths):
    db, out, res = indexed
    assert res.returncode == 0, res.stderr
    assert "warning: 3 files failed" in res.stderr
    failures = {r["path"]: r["error"] for r in dset.read_failures(out)}
    assert set(failures) == {path_to_uri(messy_dir / n) for n in ("truncated.jpg", "empty.png", "notes.jpg")}
    assert failures[path_to_uri(messy_dir / "empty.png")] == "empty file"
    assert "not an image" in failures[path_to_uri(messy_dir / "notes.jpg")]
    assert "JPEG" in failures[path_to_uri(messy_dir / "truncated.jpg")]
    assert "skipped 1 files" in res.stderr  # README.txt
    # every valid image is in Milvus, under its stable id
    from imgsearch.store import open_store

    with open_store(str(db), settings()) as store:
        info = store.collection_for(None)
        ids = {p.name: image_id(path_to_uri(messy_dir / p.name)) for p in photo_paths}
        got = store.get(info, list(ids.values()))
        assert {r["id"] for r in got} == set(ids.values())
        assert info.count == len(photo_paths)


def test_stats_json_and_reindex_keeps_count(indexed, messy_dir, cli):
    db, _, _ = indexed
    first = json.loads(cli("stats", "--db", str(db), "--json").stdout)
    assert first["count"] == 21 and first["model"] == "efficientnet_lite0" and first["dim"] == 1280
    again = cli("index", str(messy_dir), "--db", str(db))
    assert again.returncode == 0, again.stderr
    second = json.loads(cli("stats", "--db", str(db), "--json").stdout)
    assert second["count"] == 21  # reopened in new processes, same count, no duplicates


def test_search_json_finds_original(indexed, messy_dir, tmp_path, cli):
    from imgsearch.samples import write_variants

    db, _, _ = indexed
    [variant] = write_variants([messy_dir / "skimage_coffee.png"], tmp_path, kinds=("crop80",))[messy_dir / "skimage_coffee.png"]
    res = cli("search", str(variant), "--db", str(db), "-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == path_to_uri(messy_dir / "skimage_coffee.png")
    assert hits[0]["id"] == image_id(hits[0]["path"]) and 0.5 < hits[0]["score"] <= 1.0001
    table = cli("search", str(variant), "--db", str(db), "-k", "2")
    assert table.returncode == 0 and "skimage_coffee.png" in table.stdout


def one_line_error(res, *needles):
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_user_errors_are_one_line(indexed, messy_dir, tmp_path, cli):
    db, _, _ = indexed
    query = str(messy_dir / "skimage_coffee.png")
    one_line_error(cli("search", query, "--db", str(tmp_path / "none.db")), "no index at")
    one_line_error(cli("search", query, "--db", str(db), "--model", "resnet50"), "no vectors of model 'resnet50'",
                   "efficientnet_lite0")
    one_line_error(cli("search", str(messy_dir / "notes.jpg"), "--db", str(db)), "cannot use", "not an image")
    one_line_error(cli("search", str(tmp_path / "missing.jpg"), "--db", str(db)), "query image not found")
    one_line_error(cli("embed", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")), "source not found")
    one_line_error(cli("load", str(tmp_path), "--db", str(db)), "no embeddings")
    one_line_error(cli("embed", str(messy_dir), "--out", str(tmp_path / "o"), "--model", "vit_huge"), "unknown model")
    assert cli("search", query, "--db", str(db), "-k", "0").returncode == 2  # usage error from the parser


def test_resnet50_offline_without_weights_fails_clearly(tmp_path, messy_dir, cli):
    res = cli("embed", str(messy_dir), "--out", str(tmp_path / "o"), "--model", "resnet50",
              env={"TORCH_HOME": str(tmp_path / "no-cache")})
    one_line_error(res, "resnet50 needs ImageNet weights", "--weights", str(tmp_path / "no-cache"))


def test_resnet50_cli_with_made_weights(tmp_path, photo_paths, cli):
    import torch
    import torchvision

    src = copy_photos(photo_paths[:3], tmp_path / "few")
    weights = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    res = cli("embed", str(src), "--out", str(tmp_path / "o"), "--model", "resnet50", "--weights", str(weights),
              env={"TORCH_HOME": str(tmp_path / "no-cache")})
    assert res.returncode == 0, res.stderr
    s = dset.summarize(tmp_path / "o")
    assert s.models == {"resnet50": 2048} and s.embedded == 3


def _replaced_by_test_resume(tmp_path, photo_paths, cli):
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(photo_paths[0], src / photo_paths[0].name)
    assert cli("embed", str(src), "--out", str(tmp_path / "o")).returncode == 0
    one_line_error(cli("embed", str(src), "--out", str(tmp_path / "o")), "already holds embeddings", "--overwrite")
    assert cli("embed", str(src), "--out", str(tmp_path / "o"), "--overwrite").returncode == 0
    assert dset.summarize(tmp_path / "o").rows == 1
