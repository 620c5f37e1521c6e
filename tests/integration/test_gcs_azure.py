"""gs:// and az:// through the same pyarrow file-system layer as s3://, each against a real server of its API on
loopback (gcp-storage-emulator for the GCS JSON API, Microsoft's Azurite for Blob Storage): listing with the URI rule,
hostile objects, the dataset kept in the store, reruns, search, originals and status served from the store."""

from __future__ import annotations

from urllib.parse import quote

import numpy as np
import pytest

from helpers import settings
from imgsearch import dataset as dset
from imgsearch import pipeline
from imgsearch.jobs import buckets_of
from imgsearch.s3_standalone import (AZURITE_ACCOUNT, AZURITE_KEY, azurite_executable, azurite_standalone,
                                     gcs_executable, gcs_standalone)
from imgsearch.sources import image_id

pytestmark = pytest.mark.slow

BUCKET, DATA = "imgsearch-photos", "imgsearch-data"
ODD_KEY = "odd names/vue sur la mer 1.jpg"
STORES = [pytest.param("gs", marks=pytest.mark.skipif(gcs_executable() is None,
                                                      reason="gcp-storage-emulator not installed (dev extra)")),
          pytest.param("az", marks=pytest.mark.skipif(azurite_executable() is None,
                                                      reason="azurite not installed (make azurite: npm)"))]


@pytest.fixture(params=STORES)
def store(request, tmp_path_factory, photo_paths, monkeypatch):
    """A running server with the photo bucket filled: (scheme, Settings overrides)."""
    from pyarrow import fs as pafs

    scheme = request.param
    log_dir = tmp_path_factory.mktemp(scheme)
    if scheme == "gs":
        server_cm = gcs_standalone(log_dir)
    else:
        server_cm = azurite_standalone(log_dir)
        monkeypatch.setenv("AZURE_STORAGE_KEY", AZURITE_KEY)
    with server_cm as server:
        host = server.endpoint.split("://")[1]
        if scheme == "gs":  # creating buckets needs a project
            admin = pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme="http", project_id="imgsearch")
            overrides = {"gcs_endpoint": server.endpoint, "gcs_anonymous": True}
        else:
            admin = pafs.AzureFileSystem(AZURITE_ACCOUNT, account_key=AZURITE_KEY, blob_storage_authority=host,
                                         blob_storage_scheme="http", dfs_storage_authority=host, dfs_storage_scheme="http")
            overrides = {"azure_endpoint": server.endpoint, "azure_account": AZURITE_ACCOUNT}
        for b in (BUCKET, DATA):
            admin.create_dir(b)
        for i, p in enumerate(photo_paths[:6]):
            with admin.open_output_stream(f"{BUCKET}/{ODD_KEY if i == 0 else 'photos/' + p.name}") as out:
                out.write(p.read_bytes())
        with admin.open_output_stream(f"{BUCKET}/photos/text.jpg") as out:
            out.write(b"not an image\n" * 10)
        yield scheme, overrides


def test_index_a_store_into_a_dataset_in_it_rerun_and_serve(store, photo_paths, tmp_path):
    scheme, overrides = store
    s = settings(io_threads=4, data_dir=str(tmp_path / "data"), **overrides)
    db, out = str(tmp_path / "store.db"), f"{scheme}://{DATA}/emb"
    first = pipeline.index(f"{scheme}://{BUCKET}", db, "efficientnet_lite0", s, out=out)
    assert (first.embed.embedded, first.embed.failed) == (6, 1), first.embed
    assert dict(first.embed.failures).keys() == {f"{scheme}://{BUCKET}/photos/text.jpg"}
    again = pipeline.index(f"{scheme}://{BUCKET}", db, "efficientnet_lite0", s, out=out)
    assert (again.embed.embedded, again.embed.unchanged) == (0, 6), again.embed

    odd = f"{scheme}://{BUCKET}/{quote(ODD_KEY)}"  # one spelling per object, percent-encoded as file URIs are
    loc = dset.locate(out, buckets_of(s))
    rows = dset.open_dataset(loc).to_table(columns=["id", "path"]).to_pylist()
    assert {"id": image_id(odd), "path": odd} in rows and len(rows) == 7
    vec = np.concatenate([dset.vectors_of(b) for b in dset.iter_embedded(loc)])
    assert vec.shape == (6, 1280)

    hit = pipeline.search(str(photo_paths[0]), db, 1, s).hits[0]
    assert hit.path == odd and hit.score > 0.999

    from fastapi.testclient import TestClient

    from imgsearch.server import create_app

    with TestClient(create_app(db, settings=s)) as c:
        r = c.get(f"/api/images/{image_id(odd)}")
        assert r.status_code == 200 and r.content == photo_paths[0].read_bytes()
        thumb = c.get(f"/api/images/{image_id(odd)}/thumbnail")
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        status = c.get("/api/status").json()  # failures read from the dataset the last run kept in the store
        assert [f["path"] for f in status["failures"]] == [f"{scheme}://{BUCKET}/photos/text.jpg"], status
        assert status["last_run"]["embeddings"] == out
