"""Images in a bucket, against a real S3 server on loopback (moto's standalone server): listing, hostile objects,
ids by the documented URI rule, vectors equal to the same bytes on disk, incremental reruns and --sync."""

from __future__ import annotations

import os
from urllib.parse import quote

import numpy as np
import pytest

from helpers import run_cli, settings
from imgsearch import dataset as dset
from imgsearch import pipeline
from imgsearch.buckets import BucketConfig, normalize_bucket_uri, read_object
from imgsearch.s3_standalone import CREDENTIALS, executable, s3_standalone
from imgsearch.sources import image_id, list_images, path_to_uri

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(executable() is None, reason="moto[server] not installed (dev extra)")]

BUCKET = "imgsearch-photos"
ODD_KEY = "odd names/été à la plage 1.jpg"  # spaces and unicode in a key


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with s3_standalone(tmp_path_factory.mktemp("moto")) as server:
            yield server
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def admin(server):
    """The test's own client (it may create buckets; imgsearch's never does)."""
    from pyarrow import fs as pafs

    return pafs.S3FileSystem(endpoint_override=server.endpoint.split("://")[1], scheme="http", region="us-east-1",
                             allow_bucket_creation=True, allow_bucket_deletion=True)


def put(server, key: str, data: bytes) -> None:
    with admin(server).open_output_stream(f"{BUCKET}/{key}") as out:
        out.write(data)


def delete(server, key: str) -> None:
    admin(server).delete_file(f"{BUCKET}/{key}")


@pytest.fixture(scope="module")
def bucket(s3, photo_paths, tmp_path_factory):
    """12 real photos (one under a key with spaces and unicode) and hostile objects; the same photos on disk."""
    admin(s3).create_dir(BUCKET)
    local = tmp_path_factory.mktemp("same-bytes")
    photos = photo_paths[:12]
    keys = {}
    for i, p in enumerate(photos):
        key = ODD_KEY if i == 0 else f"photos/{p.name}"
        put(s3, key, p.read_bytes())
        keys[key] = p
        (local / p.name).write_bytes(p.read_bytes())
    truncated = photos[1].read_bytes()
    hostile = {"hostile/empty.jpg": b"", "hostile/text.jpg": b"this is not an image\n" * 20,
               "hostile/truncated.jpg": truncated[: len(truncated) // 3], "hostile/notes.txt": b"not a candidate",
               "hostile/.hidden.jpg": photos[2].read_bytes(), "photos/sub/no-extension": photos[3].read_bytes()}
    for key, data in hostile.items():
        put(s3, key, data)
    return {"keys": keys, "local": local, "photos": photos, "extra": photo_paths[12]}  # extra: not in the bucket


def uri(key: str) -> str:
    return f"s3://{BUCKET}/{quote(key)}"


def cfg(s3) -> BucketConfig:
    return BucketConfig(endpoint=s3.endpoint)


def test_listing_follows_the_uri_rule(s3, bucket):
    recs = list(list_images(f"s3://{BUCKET}", buckets=cfg(s3)))
    by_uri = {r.uri: r for r in recs}
    # every photo key, the no-extension image (sniffed), empty/text/truncated .jpg; not .txt, not hidden names
    expected = {uri(k) for k in bucket["keys"]} | {uri("photos/sub/no-extension"), uri("hostile/empty.jpg"),
                                                   uri("hostile/text.jpg"), uri("hostile/truncated.jpg")}
    assert set(by_uri) == expected
    odd = by_uri[uri(ODD_KEY)]
    assert odd.uri == "s3://imgsearch-photos/odd%20names/%C3%A9t%C3%A9%20%C3%A0%20la%20plage%201.jpg"
    assert odd.id == image_id(odd.uri) and odd.size == bucket["photos"][0].stat().st_size and odd.mtime is not None
    # Hadoop's spelling and an unencoded key name the same object, so they give the same id
    assert normalize_bucket_uri(f"s3a://{BUCKET}/{ODD_KEY}") == odd.uri
    assert {r.id for r in list_images(f"s3a://{BUCKET}/photos", buckets=cfg(s3))} == \
        {r.id for r in recs if r.uri.startswith(uri("photos/"))}
    assert read_object(odd.uri, cfg(s3)) == bucket["photos"][0].read_bytes()
    with pytest.raises(FileNotFoundError):
        read_object(uri("photos/missing.jpg"), cfg(s3))


def test_index_a_bucket_then_rerun_change_delete(s3, bucket, tmp_path):
    s = settings(s3_endpoint=s3.endpoint, io_threads=8)
    db = str(tmp_path / "bucket.db")
    first = pipeline.index(f"s3://{BUCKET}", db, "efficientnet_lite0", s)
    emb = first.embed
    assert emb.embedded == 13 and emb.failed == 3, emb.failures  # 12 photos + the sniffed one; 3 hostile .jpg
    reasons = dict(emb.failures)
    assert "empty" in reasons[uri("hostile/empty.jpg")].lower()
    assert reasons[uri("hostile/text.jpg")] and reasons[uri("hostile/truncated.jpg")]

    # same bytes on local disk -> the same vectors (ids differ: they are the objects' URIs)
    ref_db = str(tmp_path / "local.db")
    pipeline.index(str(bucket["local"]), ref_db, "efficientnet_lite0", s)
    from imgsearch.layout import embeddings_dir_for
    from imgsearch.testing import dataset_vectors

    def vectors(db_path: str) -> dict[str, np.ndarray]:
        return dataset_vectors(embeddings_dir_for(db_path, "efficientnet_lite0", s), key="path")

    in_bucket, on_disk = vectors(db), vectors(ref_db)
    for key, photo in bucket["keys"].items():
        a, b = in_bucket[uri(key)], on_disk[path_to_uri(bucket["local"] / photo.name)]
        assert float(a @ b) > 0.99999, key

    again = pipeline.index(f"s3://{BUCKET}", db, "efficientnet_lite0", s)
    assert (again.embed.embedded, again.embed.unchanged, again.embed.failed_unchanged) == (0, 13, 3), again.embed

    changed_key, gone_key = f"photos/{bucket['photos'][5].name}", f"photos/{bucket['photos'][6].name}"
    put(s3, changed_key, bucket["photos"][7].read_bytes())  # other pixels under the same key
    delete(s3, gone_key)
    put(s3, "photos/new one.jpg", bucket["extra"].read_bytes())
    third = pipeline.index(f"s3://{BUCKET}", db, "efficientnet_lite0", s, sync=True)
    assert (third.embed.new, third.embed.changed, third.embed.embedded, third.embed.removed) == (1, 1, 2, 1), third.embed
    after = vectors(db)
    assert uri(gone_key) not in after
    assert float(after[uri(changed_key)] @ on_disk[path_to_uri(bucket["local"] / bucket["photos"][7].name)]) > 0.99999
    res = pipeline.search(str(bucket["extra"]), db, 1, s)
    assert res.hits[0].path == uri("photos/new one.jpg")
    check_service(s3, bucket, db, tmp_path)


def test_cli_indexes_a_bucket_with_endpoint_from_the_environment(s3, bucket, tmp_path):
    env = {**CREDENTIALS, "IMGSEARCH_S3_ENDPOINT": s3.endpoint}
    expected = len(list(list_images(f"s3://{BUCKET}/photos", buckets=cfg(s3))))  # the tests above change the bucket
    got = run_cli("index", f"s3://{BUCKET}/photos", "--db", str(tmp_path / "cli.db"), env=env)
    assert got.returncode == 0, got.stderr
    assert f"embedded {expected} images" in got.stderr and expected >= 11, got.stderr
    missing = run_cli("index", "s3://no-such-bucket-here/x", "--db", str(tmp_path / "cli2.db"), env=env)
    assert missing.returncode == 1 and "no-such-bucket-here" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr


DATA = "imgsearch-data"  # the embeddings datasets kept in a bucket


def make_data_bucket(s3) -> None:
    from pyarrow import fs as pafs

    if admin(s3).get_file_info(DATA).type == pafs.FileType.NotFound:
        admin(s3).create_dir(DATA)


def parts_in(s3, prefix: str) -> dict[str, int]:
    """key -> modification time (ns) of the objects under a prefix of the data bucket."""
    from pyarrow import fs as pafs

    infos = admin(s3).get_file_info(pafs.FileSelector(f"{DATA}/{prefix}", recursive=True, allow_not_found=True))
    return {i.path: i.mtime_ns for i in infos if i.type == pafs.FileType.File}


def test_dataset_kept_in_a_bucket_is_appended_to(s3, bucket, tmp_path):
    """`index --out s3://...`: parts are committed into the bucket, a rerun writes nothing, a change adds a part
    and rewrites at most the part that held the old row; the vectors equal those of a local dataset; `load` and
    `failures` read it back."""
    from imgsearch.testing import dataset_vectors

    make_data_bucket(s3)
    s = settings(s3_endpoint=s3.endpoint, io_threads=8, rows_per_part=4, batch_size=4)
    db, out = str(tmp_path / "b.db"), f"s3://{DATA}/emb/photos"
    put(s3, "appended/a.jpg", bucket["photos"][0].read_bytes())
    for i, p in enumerate(bucket["photos"][1:10]):
        put(s3, f"appended/{i}.jpg", p.read_bytes())
    put(s3, "appended/broken.jpg", b"not an image at all")
    first = pipeline.index(f"s3://{BUCKET}/appended", db, "efficientnet_lite0", s, out=out)
    assert (first.embed.embedded, first.embed.failed) == (10, 1), first.embed
    parts = parts_in(s3, "emb/photos")
    assert len(parts) >= 3 and all(k.rsplit("/", 1)[1].startswith("part-") for k in parts), parts
    assert not list(tmp_path.glob("*.embeddings"))  # nothing kept beside the database

    again = pipeline.index(f"s3://{BUCKET}/appended", db, "efficientnet_lite0", s, out=out)
    assert (again.embed.embedded, again.embed.unchanged) == (0, 10) and parts_in(s3, "emb/photos") == parts

    put(s3, "appended/3.jpg", bucket["photos"][11].read_bytes())  # other pixels under a key
    third = pipeline.index(f"s3://{BUCKET}/appended", db, "efficientnet_lite0", s, out=out)
    assert (third.embed.changed, third.embed.embedded) == (1, 1), third.embed
    after = parts_in(s3, "emb/photos")
    assert len(set(parts) & set(after)) >= len(parts) - 1, (parts, after)  # appended: old parts stay
    assert len(set(after) - set(parts)) in (1, 2)  # the new row's part (+ the one rewritten without its old row)

    vecs = dataset_vectors(dset.locate(out, cfg(s3)), key="path")
    assert len(vecs) == 10
    local = tmp_path / "local"
    local.mkdir()
    (local / "3.jpg").write_bytes(bucket["photos"][11].read_bytes())
    pipeline.embed(str(local), str(tmp_path / "ref"), "efficientnet_lite0", s, progress=False)
    ref = dataset_vectors(tmp_path / "ref", key="path")
    assert float(vecs[uri("appended/3.jpg")] @ next(iter(ref.values()))) > 0.99999

    fresh = str(tmp_path / "fresh.db")  # `load` from the bucket dataset into another database
    loaded = pipeline.load(out, fresh, s)
    assert sum(loaded.written.values()) == 10 and loaded.failed_rows == 1
    assert pipeline.search(str(bucket["photos"][11]), fresh, 1, s).hits[0].path == uri("appended/3.jpg")
    assert [f["path"] for f in pipeline.failures(fresh, s, data=out)] == [uri("appended/broken.jpg")]


def check_service(s3, bucket, db: str, tmp_path) -> None:
    """Search by upload, then the original and a thumbnail streamed from the bucket by id; a gone object is a 404,
    a failing bucket a 502 with its reason."""
    from fastapi.testclient import TestClient

    from imgsearch.s3_standalone import free_port
    from imgsearch.server import create_app

    new_id = image_id(uri("photos/new one.jpg"))
    with TestClient(create_app(db, settings=settings(s3_endpoint=s3.endpoint,
                                                     data_dir=str(tmp_path / "data")))) as c:
        r = c.post("/api/search", files={"file": ("q.jpg", bucket["extra"].read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and r.json()["results"][0]["id"] == new_id, r.text
        orig = c.get(f"/api/images/{new_id}")
        assert orig.status_code == 200 and orig.content == bucket["extra"].read_bytes()
        assert orig.headers["content-type"] == "image/jpeg"  # from the key's name
        thumb = c.get(f"/api/images/{new_id}/thumbnail")
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        delete(s3, "photos/new one.jpg")
        assert c.get(f"/api/images/{new_id}").status_code == 404  # gone from the bucket: not found, no crash
        assert c.get(f"/api/images/{new_id}/thumbnail").status_code == 200  # cached
    odd_id = image_id(uri(ODD_KEY))
    dead = settings(s3_endpoint=f"http://127.0.0.1:{free_port()}", data_dir=str(tmp_path / "data2"))
    with TestClient(create_app(db, settings=dead)) as c:  # the bucket's server is down: 502 with a reason
        for path in (f"/api/images/{odd_id}", f"/api/images/{odd_id}/thumbnail"):
            r = c.get(path)
            assert r.status_code == 502 and "storage" in r.json()["detail"], (path, r.text)


def test_kill9_during_a_bucket_run_then_rerun_equals_clean_run(s3, bucket, photo_paths, tmp_path):
    from imgsearch import samples
    from imgsearch.testing import kill_cycles

    faces = samples.write_lfw_faces(tmp_path / "faces", n=60)
    for p in [*photo_paths, *faces]:
        put(s3, f"kill/{p.parent.name}/{p.name}", p.read_bytes())
    total = len(photo_paths) + len(faces)
    env = {**CREDENTIALS, "IMGSEARCH_S3_ENDPOINT": s3.endpoint, "IMGSEARCH_BATCH_SIZE": "8",
           "IMGSEARCH_ROWS_PER_PART": "16", "IMGSEARCH_PART_SECONDS": "0.5"}
    make_data_bucket(s3)
    # the images and the embeddings dataset both in buckets: a killed upload must leave no part behind
    r = kill_cycles(f"s3://{BUCKET}/kill", tmp_path / "work", total=total, kills=3, seed=20261123, env=env,
                    out=f"s3://{DATA}/kill", buckets=cfg(s3))
    print({k: v for k, v in r.items() if not k.endswith("stderr")})
    assert r["kills"] >= 3 and r["final_returncode"] == 0 and r["clean_returncode"] == 0, r
    assert r["ids_equal_clean_run"] and r["milvus_count"] == r["clean_count"] == total
    assert r["milvus_unique_ids"] == total and r["dataset_rows"] == r["dataset_unique_ids"] == total
    assert r["min_cosine_vs_clean"] > 0.999
    assert any(c["killed"] and c["rows_committed"] > 0 for c in r["cycles"])


def test_spark_reads_a_bucket_without_a_hadoop_connector(s3, bucket, tmp_path):
    """s3:// under the Spark engine: the driver lists, the Python workers read the objects; the same ids, vectors
    and failures as the local engine. s3a:// without the connector fails with the --packages line to use."""
    pytest.importorskip("pyspark")
    from imgsearch.engines import EngineOptions, create_engine
    from imgsearch.jobs import EmbedJob

    s = settings(s3_endpoint=s3.endpoint)

    def rows(engine: str) -> dict[str, tuple]:
        out = tmp_path / f"{engine}.parquet"
        job = EmbedJob.from_settings(s, "efficientnet_lite0")
        with create_engine(engine, s, EngineOptions(master="local[2]")) as eng:  # one Spark session for both
            rep = pipeline.embed_with(eng, f"s3://{BUCKET}/hostile", str(out), job)
            rep2 = pipeline.embed_with(eng, f"s3://{BUCKET}/photos", str(out), job)
        assert rep.failed == 3 and rep2.embedded >= 11, (rep, rep2)
        got = {}
        table = dset.read_rows(dset.part_files(out), columns=["id", "path", "vector", "error"])
        for i, path, vec, err in zip(table["id"], table["path"], table["vector"], table["error"]):
            got[i] = (path, None if vec is None else np.asarray(vec, np.float32), err)
        return got

    local, spark = rows("local"), rows("spark")
    assert local.keys() == spark.keys()
    for i, (path, vec, err) in local.items():
        assert spark[i][0] == path and (spark[i][2] is None) == (err is None), path
        if vec is not None:
            assert float(vec @ spark[i][1]) > 0.9999, path

    from imgsearch.errors import ImgSearchError

    with pytest.raises(ImgSearchError, match="hadoop-aws"):
        pipeline.embed(f"s3a://{BUCKET}/photos", str(tmp_path / "s3a.parquet"), "efficientnet_lite0", s,
                       engine="spark", options=EngineOptions(master="local[2]"), overwrite=True)
