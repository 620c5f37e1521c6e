"""Spark engine acceptance: same ids and vectors as the local engine, failures recorded, model loaded once per worker,
and its output searchable the same way in Milvus Lite and in a Milvus server."""

import json
import os
import shutil
import time
import urllib.request
from collections import Counter

import numpy as np
import pytest

pyspark = pytest.importorskip("pyspark")

from imgsearch import dataset as dset  # noqa: E402
from imgsearch import pipeline  # noqa: E402
from imgsearch.engines import EngineOptions, create_engine  # noqa: E402
from imgsearch.jobs import EmbedJob  # noqa: E402
from imgsearch.models import create_model  # noqa: E402
from imgsearch.query import QueryEncoder  # noqa: E402
from imgsearch.samples import write_variants  # noqa: E402
from imgsearch.sources import path_to_uri  # noqa: E402
from imgsearch.store import open_store  # noqa: E402

from helpers import REPO, copy_photos, run_cli, settings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_log(tmp_path_factory):
    """The work log the tasks append to (its path travels to the workers inside the job)."""
    path = tmp_path_factory.mktemp("wlog") / "workers.log"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    """42 real photographs (21 originals + an 80% crop of each) and a corrupt JPEG."""
    d = copy_photos(photo_paths, tmp_path_factory.mktemp("spark-src"))
    write_variants(photo_paths, d / "crops", kinds=("crop80",))
    jpeg = (d / "sklearn_flower.jpg").read_bytes()
    (d / "corrupt.jpg").write_bytes(jpeg[:2000])
    return d


@pytest.fixture(scope="module")
def local_result(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out")
    rep = pipeline.embed(str(corpus), str(out), "efficientnet_lite0", settings(), progress=False)
    assert rep.embedded == 42 and rep.failed == 1
    return read(out)


def read(out) -> dict:
    table = dset.open_dataset(out).to_table()
    rows = {}
    for r in table.to_pylist():
        rows[r["id"]] = r
    return rows


def job(log, batch_size=32):
    return EmbedJob(model="efficientnet_lite0", device="cpu", batch_size=batch_size, worker_log=str(log))


def log_lines(path, start):
    return path.read_text().splitlines()[start:]


@pytest.mark.parametrize("master", ["local[2]", "local-cluster[2,1,1024]"])
def test_spark_matches_local_engine(master, corpus, local_result, worker_log, tmp_path):
    start = len(worker_log.read_text().splitlines())
    out = tmp_path / "spark-out"
    with create_engine("spark", settings(), EngineOptions(master=master, partitions=6)) as eng:
        rep = eng.embed(str(corpus), eng.list(str(corpus)).records, str(out), job(worker_log, batch_size=4),
                        mode="new")
    assert rep.embedded == 42 and rep.failed == 1
    assert rep.failures == [(path_to_uri(corpus / "corrupt.jpg"), local_result[next(
        i for i, r in local_result.items() if r["error"])]["error"])]
    spark_rows = read(out)
    assert set(spark_rows) == set(local_result)  # same ids for the same files
    for i, r in spark_rows.items():
        loc = local_result[i]
        assert r["path"] == loc["path"] and r["bytes"] == loc["bytes"] and r["width"] == loc["width"]
        if loc["error"]:
            assert r["vector"] is None and "JPEG" in r["error"]
            continue
        a, b = np.asarray(r["vector"], np.float32), np.asarray(loc["vector"], np.float32)
        assert float(a @ b) >= 0.999, (r["path"], float(a @ b))

    # The model is loaded once per Python worker, then reused by every batch of every task.
    lines = log_lines(worker_log, start)
    loads = Counter(line.split()[1] for line in lines if line.startswith("load "))
    batches = [line.split() for line in lines if line.startswith("batch ")]
    assert loads and all(n == 1 for n in loads.values()), loads
    assert len(loads) <= 2  # two task slots -> at most two Python workers
    assert {b[1] for b in batches} <= set(loads)
    assert sum(int(b[2]) for b in batches) == 43 and len(batches) >= 11 > len(loads)  # 43 files in batches of 4


def test_spark_output_searches_the_same_in_lite_and_server(corpus, tmp_path, photo_paths):
    from imgsearch.milvus_standalone import executable, milvus_standalone

    if executable() is None:
        pytest.skip("milvus-server (PyPI package 'milvus') not installed")
    out = tmp_path / "emb"
    lite = tmp_path / "lite.db"
    res = run_cli("index", str(corpus), "--engine", "spark", "--master", "local[2]", "--db", str(lite),
                  "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning: 1 files failed" in res.stderr
    queries = write_variants(photo_paths[:10], tmp_path / "q", kinds=("resize50",))
    encoder = QueryEncoder(create_model("efficientnet_lite0"))
    qvecs = np.concatenate([encoder.encode_file(str(q[0]), 10**8) for q in queries.values()])

    def top5(uri):
        with open_store(uri, settings()) as st:
            info = st.collection_for(None)
            assert info.count == 42
            return [[h.id for h in hits] for hits in st.search(info, qvecs, 5, consistency="Strong")], info.index_type

    lite_top, lite_index = top5(str(lite))
    with milvus_standalone(tmp_path / "milvus-data", port=19530) as uri:
        res = run_cli("load", str(out), "--db", uri)
        assert res.returncode == 0, res.stderr[-2000:]
        server_top, server_index = top5(uri)
        # Indexing and serving side by side on a server URI: the service sees new images without a restart.
        from imgsearch.server.live import live_server

        more = tmp_path / "more"
        more.mkdir()
        shutil.copy(photo_paths[0], more / "extra_copy.png")
        with live_server(uri, log_dir=tmp_path) as url:
            res = run_cli("index", str(more), "--db", uri)
            assert res.returncode == 0, res.stderr[-2000:]
            deadline = time.time() + 30
            while True:  # the service refreshes its collection info every couple of seconds
                with urllib.request.urlopen(url + "/api/stats") as r:
                    if json.load(r)["count"] == 43:
                        break
                assert time.time() < deadline, "the server did not see the image indexed beside it"
                time.sleep(0.5)
    assert (lite_index, server_index) == ("FLAT", "HNSW")
    assert lite_top == server_top


def test_spark_submit_entry_point(corpus, tmp_path):
    """The cluster path: spark-submit runs scripts/imgsearch_spark.py as the driver program, with the same CLI."""
    import subprocess
    import sys
    from pathlib import Path

    entry = REPO / "scripts" / "imgsearch_spark.py"

    submit = Path(sys.executable).parent / "spark-submit"
    if not submit.exists():
        pytest.skip("spark-submit not found beside this Python")
    out = tmp_path / "submitted"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    res = subprocess.run([str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(entry),
                          "embed", str(corpus), "--out", str(out), "--engine", "spark"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    s = dset.summarize(out)
    assert (s.embedded, s.failed) == (42, 1)


def test_spark_incremental_and_engines_agree_on_what_is_done(corpus, tmp_path, photo_paths):
    """A Spark rerun embeds only the new file; a local-engine rerun over Spark's output finds nothing to do (both
    engines see the same size and mtime), and deleting with --sync works the same way."""
    src = tmp_path / "src"
    shutil.copytree(corpus, src)
    db = str(tmp_path / "inc.db")
    spark = ["--engine", "spark", "--master", "local[2]"]
    first = run_cli("index", str(src), "--db", db, *spark)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "43 new" in first.stderr and "embedded 42 images" in first.stderr
    shutil.copy(photo_paths[0], src / "added.png")
    (src / "_hidden_by_hadoop.png").write_bytes((src / photo_paths[1].name).read_bytes())
    again = run_cli("index", str(src), "--db", db, *spark)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 new, 0 changed, 42 unchanged, 1 failed before" in again.stderr and "embedded 1 images" in again.stderr, again.stderr
    assert "Hadoop hides names that start with '_'" in again.stderr
    local = run_cli("index", str(src), "--db", db)
    assert "0 new, 0 changed, 43 unchanged, 2 failed before" in local.stderr and "nothing to embed" in local.stderr, local.stderr
    (src / "added.png").unlink()
    synced = run_cli("index", str(src), "--db", db, "--sync", *spark)
    assert "1 removed" in synced.stderr and "nothing to embed" in synced.stderr, synced.stderr
    with open_store(db, settings()) as store:
        assert store.collection_for(None).count == 42


def test_spark_kill9_then_rerun_equals_clean_run(tmp_path, photo_paths):
    """kill -9 of the whole Spark job (driver, JVM, Python workers) at random moments; tasks that finished had
    committed their part files (v2 committer), so a rerun does only the rest."""
    from imgsearch.testing import kill_cycles
    from imgsearch import samples

    src = copy_photos(photo_paths, tmp_path / "images")
    samples.write_lfw_faces(src / "faces", n=100)
    total = len(photo_paths) + 100
    env = {"IMGSEARCH_BATCH_SIZE": "8"}
    r = kill_cycles(src, tmp_path / "work", total=total, kills=1, seed=3, engine="spark", startup=(1.0, 8.0),
                    extra=["--master", "local[2]", "--partitions", "8"], env=env)
    print({k: v for k, v in r.items() if not k.endswith("stderr")})
    assert r["kills"] == 1 and r["final_returncode"] == 0, r.get("final_stderr")
    assert r["ids_equal_clean_run"] and r["milvus_count"] == r["milvus_unique_ids"] == total
    assert r["dataset_rows"] == r["dataset_unique_ids"] == total and r["min_cosine_vs_clean"] > 0.999
    assert r["rows_redone"] <= (total // 8 + 1) * 2  # at most the tasks running at the kill (2 slots)
