"""PCA end to end on real photos: local and Spark fits agree, a reduced index still finds near-duplicates, and
queries go through the collection's reducer everywhere (CLI, service)."""

import json
import shutil

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from imgsearch import pipeline
from imgsearch.models import create_model
from imgsearch.query import QueryEncoder
from imgsearch.reduce import Reducer
from imgsearch.samples import VARIANTS, write_lfw_faces, write_variants
from imgsearch.sources import path_to_uri
from imgsearch.store import open_store

from helpers import copy_photos, run_cli, settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    """21 real photos + 200 real face photos (distractors)."""
    d = copy_photos(photo_paths, tmp_path_factory.mktemp("pca-src"))
    write_lfw_faces(d / "faces")
    return d


@pytest.fixture(scope="module")
def embeddings(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pca-emb") / "emb"
    rep = pipeline.embed(str(corpus), str(out), "efficientnet_lite0", settings(), progress=False)
    assert rep.embedded == 221
    return out


def test_reduce_cli_writes_reducer_plot_and_report(embeddings, tmp_path):
    res = run_cli("reduce", str(embeddings), "--out", str(tmp_path / "r"), "--variance", "0.9")
    assert res.returncode == 0, res.stderr
    assert "1280 ->" in res.stderr and "recall@10" in res.stderr and "wrote 221 reduced vectors" in res.stdout
    meta = json.loads((tmp_path / "r" / "_reducer" / "reducer.json").read_text())
    assert meta["model"] == "efficientnet_lite0" and meta["input_dim"] == 1280 and meta["variance_kept"] >= 0.9
    assert 0 < meta["quality"]["recall_at_10"] <= 1 and meta["quality"]["sample"] == 221
    png = tmp_path / "r" / "_reducer" / "explained_variance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    bad = run_cli("reduce", str(embeddings), "--out", str(tmp_path / "x"))
    assert bad.returncode == 1 and "exactly one of --variance" in bad.stderr


def test_local_and_spark_fits_agree(embeddings, tmp_path):
    pytest.importorskip("pyspark")
    spark_rep = pipeline.reduce(str(embeddings), str(tmp_path / "s"), settings(), variance=0.95, engine="spark")
    local_rep = pipeline.reduce(str(embeddings), str(tmp_path / "l"), settings(), variance=0.95, engine="local")
    a, b = local_rep.reducer, spark_rep.reducer
    assert a.k == b.k
    assert np.max(subspace_angles(a.components.T, b.components.T)) < 1e-6
    np.testing.assert_allclose(a.mean, b.mean, atol=1e-9)


def test_reduced_index_finds_near_duplicates(corpus, photo_paths, tmp_path):
    db = tmp_path / "pca.db"
    res = run_cli("index", str(corpus), "--db", str(db), "--reduce", "0.95")
    assert res.returncode == 0, res.stderr
    st = json.loads(run_cli("stats", "--db", str(db), "--json").stdout)
    [coll] = st["collections"]
    assert coll["reducer"] and coll["dim"] < 1280 and st["count"] == 221
    reducer = Reducer.load(db.parent / "reducers" / coll["reducer"])
    assert reducer.k == coll["dim"]

    variants = write_variants(photo_paths, tmp_path / "variants")
    encoder = QueryEncoder(create_model("efficientnet_lite0"))
    top1 = top3 = total = 0
    with open_store(str(db), settings()) as store:
        info = store.collection_for(None)
        for original, copies in variants.items():
            for copy in copies:
                q = reducer.transform(encoder.encode_file(str(copy), 10**8))
                ranked = [h.path for h in store.search(info, q, 3)[0]]
                total += 1
                top1 += ranked[0] == path_to_uri(corpus / original.name)
                top3 += path_to_uri(corpus / original.name) in ranked
    print(f"reduced to {reducer.k} dims: top1 {top1}/{total}, top3 {top3}/{total}")
    assert total == len(photo_paths) * len(VARIANTS)
    assert top3 == total and top1 >= 0.9 * total

    # the CLI search applies the reducer itself
    q = variants[photo_paths[0]][0]
    hits = json.loads(run_cli("search", str(q), "--db", str(db), "-k", "3", "--json").stdout)
    assert hits[0]["path"] == path_to_uri(corpus / photo_paths[0].name)

    # and so does the service, also for an image it adds
    from fastapi.testclient import TestClient

    from imgsearch.config import Settings
    from imgsearch.server import create_app

    with TestClient(create_app(str(db), settings=Settings(api_key="k"))) as c:
        r = c.post("/api/search?k=1", files={"file": ("q.jpg", q.read_bytes())})
        assert r.status_code == 200 and r.json()["results"][0]["name"] == photo_paths[0].name
        assert c.get("/api/stats").json()["reducer"] == coll["reducer"]
        added = c.post("/api/images", files={"file": ("new.jpg", variants[photo_paths[1]][3].read_bytes())},
                       headers={"X-API-Key": "k"})
        assert added.status_code == 201, added.text
        assert c.get("/api/stats").json()["count"] == 222

    # without its reducer file, a reduced collection refuses to be searched, clearly
    shutil.rmtree(db.parent / "reducers")
    res = run_cli("search", str(q), "--db", str(db))
    assert res.returncode == 1 and "reducer" in res.stderr and "_reducer" in res.stderr
