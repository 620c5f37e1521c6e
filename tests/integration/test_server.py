"""REST API tests over a real index (Milvus Lite) and the real default model, through FastAPI's TestClient."""

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgsearch.config import Settings
from imgsearch.server import create_app
from imgsearch.sources import image_id, path_to_uri

from helpers import index_photos

pytestmark = pytest.mark.slow
KEY = "test-key-123"


@pytest.fixture(scope="module")
def indexed_db(tmp_path_factory, photo_paths):
    return index_photos(tmp_path_factory, photo_paths, "srv")


def client_for(db, **overrides) -> TestClient:
    settings = Settings(api_key=KEY, data_dir=str(db.parent / "data"), **overrides)
    return TestClient(create_app(str(db), settings=settings))


@pytest.fixture(scope="module")
def client(indexed_db):
    db, _ = indexed_db
    with client_for(db, max_upload_bytes=5_000_000) as c:
        yield c


def jpeg_bytes(path, kind="crop80"):
    from imgsearch.samples import make_variant

    with Image.open(path) as im:
        im.load()
        variant, opts = make_variant(im, kind)
    buf = io.BytesIO()
    variant.save(buf, "JPEG", **opts)
    return buf.getvalue()


def test_page_and_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "imgsearch" in r.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "//" not in r.text.replace("http://", "").replace("https://", "").split("<script")[0].split("stylesheet")[0][:0]
    assert "cdn" not in r.text.lower()
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_search_returns_original_first(client, indexed_db):
    _, src = indexed_db
    data = jpeg_bytes(src / "skimage_astronaut.png")
    r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 10 and body["k"] == 10 and body["count"] == 21
    top = body["results"][0]
    assert top["path"] == path_to_uri(src / "skimage_astronaut.png") and top["name"] == "skimage_astronaut.png"
    assert top["thumbnail_url"] == f"/api/images/{top['id']}/thumbnail" and top["image_url"] == f"/api/images/{top['id']}"
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["took_ms"] > 0 and set(body["timings_ms"]) == {"decode", "queue", "embed", "search", "batch",
                                                               "copy_check"}
    # "is this a copy?": the query is the astronaut re-encoded as JPEG: that hit, and no other photo, says so
    assert top["same_picture"] is not None and top["same_picture"]["ncc"] >= 0.9
    assert all(x["same_picture"] is None for x in body["results"][1:])
    # k as query or as form field
    assert len(client.post("/api/search?k=3", files={"file": ("q.jpg", data)}).json()["results"]) == 3
    assert len(client.post("/api/search", data={"k": "4"}, files={"file": ("q.jpg", data)}).json()["results"]) == 4


def test_search_path_prefix_filter(client, indexed_db):
    _, src = indexed_db
    data = jpeg_bytes(src / "skimage_astronaut.png")
    prefix = path_to_uri(src / "sklearn_")
    r = client.post("/api/search", data={"path_prefix": prefix}, files={"file": ("q.jpg", data)})
    assert r.status_code == 200
    names = [x["name"] for x in r.json()["results"]]
    assert sorted(names) == ["sklearn_china.jpg", "sklearn_flower.jpg"]


@pytest.mark.parametrize("k", ["0", "101", "-1", "ten"])
def test_k_out_of_range_is_422(client, indexed_db, k):
    _, src = indexed_db
    data = jpeg_bytes(src / "skimage_coffee.png")
    r = client.post(f"/api/search?k={k}", files={"file": ("q.jpg", data)})
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/api/search", data={"k": k}, files={"file": ("q.jpg", data)})
    assert r.status_code == 422
    some_id = image_id(path_to_uri(src / "skimage_coffee.png"))
    assert client.get(f"/api/images/{some_id}/similar?k={k}").status_code == 422


def test_bad_uploads(client):
    r = client.post("/api/search", files={"file": ("notes.jpg", b"just some text\n" * 20, "image/jpeg")})
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(buf, "JPEG")
    r = client.post("/api/search", files={"file": ("cut.jpg", buf.getvalue()[:400], "image/jpeg")})
    assert r.status_code == 422, r.text
    r = client.post("/api/search", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    assert client.post("/api/search").status_code == 422  # no file field


def test_decompression_bomb_is_422(client):
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, "PNG")  # 900 M pixels in a ~100 KB file
    r = client.post("/api/search", files={"file": ("bomb.png", buf.getvalue(), "image/png")})
    assert r.status_code == 422 and "too large" in r.json()["detail"]


def test_upload_over_cap_is_413(client):
    big = b"\xff\xd8\xff" + b"\x00" * 6_000_000
    r = client.post("/api/search", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_similar_excludes_self_and_404s(client, indexed_db):
    _, src = indexed_db
    qid = image_id(path_to_uri(src / "skimage_chelsea.png"))
    r = client.get(f"/api/images/{qid}/similar?k=5")
    assert r.status_code == 200
    ids = [x["id"] for x in r.json()["results"]]
    assert len(ids) == 5 and qid not in ids
    assert client.get(f"/api/images/{'0' * 32}/similar").status_code == 404
    assert client.get("/api/images/not-an-id/similar").status_code == 404


def test_image_and_thumbnail_by_id_only(client, indexed_db):
    db, src = indexed_db
    original = src / "sklearn_china.jpg"
    qid = image_id(path_to_uri(original))
    r = client.get(f"/api/images/{qid}")
    assert r.status_code == 200 and r.content == original.read_bytes()
    r = client.get(f"/api/images/{qid}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as th:
        assert max(th.size) == 256 and th.size[0] > th.size[1]  # aspect kept (china.jpg is landscape)
    cached = db.parent / "data" / "thumbnails" / qid[:2] / f"{qid}.jpg"
    assert cached.is_file()
    mtime = cached.stat().st_mtime_ns
    assert client.get(f"/api/images/{qid}/thumbnail").content == r.content and cached.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("url", [
    "/api/images/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumbnail",
    "/api/images/..%2Fsrv.db",
    "/api/images/%2Fetc%2Fpasswd",
    "/api/images/" + "a" * 31 + "%2F",
    "/static/..%2F..%2Fapp.py",
    "/static/../app.py",
])
def test_path_traversal_is_404(client, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code)
    assert b"root:" not in r.content and b"import" not in r.content


def test_write_routes_need_the_key(client, indexed_db, tmp_path):
    _, src = indexed_db
    data = jpeg_bytes(src / "skimage_rocket.jpg", "hflip")
    assert client.post("/api/images", files={"file": ("new.jpg", data)}).status_code == 401
    assert client.post("/api/images", files={"file": ("new.jpg", data)}, headers={"X-API-Key": "wrong"}).status_code == 403
    r = client.post("/api/images", files={"file": ("new rocket.jpg", data)}, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    new_id = r.json()["id"]
    assert client.get("/api/stats").json()["count"] == 22
    hits = client.post("/api/search?k=1", files={"file": ("q.jpg", data)}).json()["results"]
    assert hits[0]["id"] == new_id
    assert client.get(f"/api/images/{new_id}").content == data
    assert client.delete(f"/api/images/{new_id}").status_code == 401
    assert client.delete(f"/api/images/{new_id}", headers={"Authorization": "Bearer wrong"}).status_code == 403
    r = client.delete(f"/api/images/{new_id}", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json() == {"deleted": new_id}
    assert client.get(f"/api/images/{new_id}").status_code == 404
    assert client.delete(f"/api/images/{new_id}", headers={"X-API-Key": KEY}).status_code == 404
    assert client.get("/api/stats").json()["count"] == 21
    r = client.post("/api/images", files={"file": ("t.jpg", b"text")}, headers={"X-API-Key": KEY})
    assert r.status_code == 415


def test_stats_health_metrics(client):
    st = client.get("/api/stats").json()
    assert st["count"] == 21 and st["model"] == "efficientnet_lite0" and st["dim"] == 1280
    assert client.get("/healthz").json() == {"status": "ok", "count": 21}
    text = client.get("/metrics").text
    assert 'imgsearch_http_requests_total{method="POST",route="/api/search",status="200"}' in text
    assert "imgsearch_http_request_seconds_bucket" in text and "imgsearch_index_images 21.0" in text
    assert 'imgsearch_search_stage_seconds_count{stage="embed"}' in text


def test_writes_disabled_without_key_and_reads_protectable(indexed_db, tmp_path, photo_paths):
    db = tmp_path / "other.db"
    settings = Settings(api_key="", data_dir=str(tmp_path / "d"))
    with TestClient(create_app(str(db), settings=settings)) as c:
        r = c.post("/api/images", files={"file": ("x.jpg", photo_paths[0].read_bytes())}, headers={"X-API-Key": "x"})
        assert r.status_code == 403 and "IMGSEARCH_API_KEY" in r.json()["detail"]
        r = c.post("/api/search", files={"file": ("q.png", photo_paths[0].read_bytes())})
        assert r.status_code == 200 and r.json()["results"] == [] and "empty" in r.json()["message"]
    settings = Settings(api_key=KEY, protect_reads=True, data_dir=str(tmp_path / "d"))
    with TestClient(create_app(str(db), settings=settings)) as c:
        assert c.post("/api/search", files={"file": ("q.png", photo_paths[0].read_bytes())}).status_code == 401
        assert c.get("/api/stats").status_code == 401
        assert c.get("/api/stats", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_tag_search_form_json_and_url(client, indexed_db):
    """Keyword search through every way in: a form field, JSON and the URL; results carry their tags."""
    _, src = indexed_db
    coffee = path_to_uri(src / "skimage_coffee.png")
    got = [client.post("/api/search", data={"tag": "espresso", "k": "5"}),
           client.post("/api/search", json={"tag": ["espresso"], "k": 5}),
           client.get("/api/search", params={"tag": "espresso", "k": 5})]
    for r in got:
        assert r.status_code == 200, r.text
        [hit] = r.json()["results"]
        assert hit["path"] == coffee and hit["tags"][0] == "espresso" and hit["tag_scores"][0] > 0.5
    # a tag filter on an image search: only images with the tag, still ranked by similarity
    data = jpeg_bytes(src / "skimage_chelsea.png")
    r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"tag": "cat", "k": "20"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res and res[0]["path"] == path_to_uri(src / "skimage_chelsea.png")
    assert all(any(t.endswith(" cat") for t in x["tags"]) for x in res)
    assert [x["score"] for x in res] == sorted((x["score"] for x in res), reverse=True)


@pytest.mark.parametrize("req, status, message", [
    ({"json": {"text": "a dog on a beach"}}, 422, "no text encoder"),
    ({"data": {"text": "a dog on a beach"}}, 422, "models that can: clip_vit_b16"),
    ({"params": {"text": "a dog"}, "method": "get"}, 422, "no text encoder"),
    ({"json": {"tag": ["zzzz"]}}, 422, "no tag matches"),
    ({"json": {}}, 422, "nothing to search for"),
    ({"json": {"tag": ["espresso"], "k": 0}}, 422, "greater than or equal to 1"),
    ({"json": {"tag": ["espresso"], "unknown": 1}, "ok": True}, 200, ""),
])
def test_query_errors_are_clear_422s(client, req, status, message):
    method = req.get("method", "post")
    kwargs = {k: v for k, v in req.items() if k in ("json", "data", "params")}
    r = getattr(client, method)("/api/search", **kwargs)
    assert r.status_code == status, r.text
    if message:
        assert message in r.text


def test_image_meta_and_tag_vocabulary(client, indexed_db):
    _, src = indexed_db
    iid = image_id(path_to_uri(src / "skimage_coffee.png"))
    m = client.get(f"/api/images/{iid}/meta").json()
    assert m["name"] == "skimage_coffee.png" and m["format"] == "PNG" and m["width"] == 600 and m["height"] == 400
    assert m["tags"][0] == "espresso" and m["mtime"].endswith("+00:00") and m["bytes"] > 0
    assert client.get("/api/images/" + "0" * 32 + "/meta").status_code == 404
    assert client.get("/api/images/../../etc/passwd/meta").status_code == 404
    t = client.get("/api/tags", params={"prefix": "espr"}).json()
    assert t["tags"][:2] == ["espresso maker", "espresso"] or set(t["tags"][:2]) == {"espresso", "espresso maker"}
    assert t["text"] is False
    s = client.get("/api/stats").json()
    assert s["tags"] is True and s["text"] is False
