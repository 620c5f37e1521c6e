"""The JSON API behind the web app's views, over a real index: browse (paging, sorting, every filter, the same
meaning as the search filters), folders, duplicates (threshold, export), an image's near-duplicates, status with its
failures and last run, deletes with the key only."""

import csv
import io
import os

import pytest
from fastapi.testclient import TestClient

from helpers import webapp_collection
from imgsearch.config import Settings
from imgsearch.server import create_app
from imgsearch.sources import image_id, path_to_uri

pytestmark = pytest.mark.slow
KEY = "webapp-key"


@pytest.fixture(scope="module")
def collection(tmp_path_factory, photo_paths):
    return webapp_collection(tmp_path_factory.mktemp("webapp"), photo_paths)


@pytest.fixture(scope="module")
def client(collection):
    db, _ = collection
    with TestClient(create_app(str(db), settings=Settings(api_key=KEY))) as c:
        yield c


def browse(client, **params):
    r = client.get("/api/images", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_browse_pages_and_sorts(client, collection):
    _, root = collection
    every = browse(client, limit=200)
    assert every["total"] == 19 and len(every["items"]) == 19  # 8 + 8 + 3 edited; the broken file is not indexed
    dates = [i["mtime"] for i in every["items"]]
    assert dates == sorted(dates, reverse=True)  # newest first by default
    pages = [browse(client, limit=7, offset=o) for o in (0, 7, 14)]
    assert [len(p["items"]) for p in pages] == [7, 7, 5] and all(p["total"] == 19 for p in pages)
    assert sum((p["items"] for p in pages), []) == every["items"]
    assert browse(client, offset=19)["items"] == [] and browse(client, offset=10_000)["total"] == 19
    names = [i["name"].lower() for i in browse(client, sort="name", limit=200)["items"]]
    assert names == sorted(names)
    sizes = [i["width"] * i["height"] for i in browse(client, sort="size", limit=200)["items"]]
    assert sizes == sorted(sizes, reverse=True)
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"sort": "random"}):
        assert client.get("/api/images", params=bad).status_code == 422, bad


def test_every_filter_narrows_browse_and_search_alike(client, collection):
    """Each filter gives the images it says in browse, and an image search with the same filter returns only those."""
    _, root = collection
    b_ids = {image_id(path_to_uri(p)) for p in (root / "b").rglob("*") if p.is_file() and p.name != "broken.jpg"}
    cases = {
        "folder": ({"folder": str(root / "b")}, lambda i: i["id"] in b_ids),
        "dates": ({"date_from": "2020-06-01", "date_to": "2020-06-30"}, lambda i: i["mtime"].startswith("2020-06")),
        "date_to_inclusive": ({"date_to": "2020-06-15"}, lambda i: i["mtime"].startswith("2020-06")),
        "size": ({"min_width": 600, "min_height": 400}, lambda i: i["width"] >= 600 and i["height"] >= 400),
        "max_size": ({"max_width": 512}, lambda i: i["width"] <= 512),
        "format": ({"format": "jpeg"}, lambda i: i["format"] == "JPEG"),
        "formats": ({"format": ["png", "jpg"]}, lambda i: i["format"] in ("PNG", "JPEG")),
    }
    every = browse(client, limit=200)["items"]
    query = (root / "a" / sorted(os.listdir(root / "a"))[0]).read_bytes()
    for name, (params, rule) in cases.items():
        got = browse(client, limit=200, **params)
        want = [i for i in every if rule(i)]
        assert 0 < got["total"] < len(every) or name == "formats", (name, got["total"])
        assert sorted(i["id"] for i in got["items"]) == sorted(i["id"] for i in want), name
        r = client.post("/api/search", params={**params, "k": 50, "expand": "false"},
                        files={"file": ("q.png", query, "image/png")})
        assert r.status_code == 200, (name, r.text)
        assert {x["id"] for x in r.json()["results"]} == {i["id"] for i in want}, name
    tagged = browse(client, tag="cat", limit=200)
    assert tagged["total"] >= 1 and all(any(t.endswith(" cat") for t in i["tags"]) for i in tagged["items"])


@pytest.mark.parametrize("params, message", [
    ({"date_from": "2024-02-30"}, "date_from: '2024-02-30' is not a date"),
    ({"date_to": "yesterday"}, "date_to"),
    ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "is before date_from"),
    ({"min_width": 500, "max_width": 100}, "max_width (100) is below min_width (500)"),
    ({"format": "heic2"}, "format: 'heic2' is not one of"),
    ({"folder": "relative/path"}, "neither an absolute path nor a URI"),
    ({"colour": "red"}, "unknown query field(s): colour"),
    ({"tag": "zzzz"}, "no tag matches"),
])
def test_filter_validation_is_422_with_a_message(client, params, message):
    for url in ("/api/images", "/api/search"):
        if url == "/api/search" and "tag" not in params:
            params = {**params, "tag": "cat"}
        r = client.get(url, params=params)
        assert r.status_code == 422 and message in r.text, (url, r.text)


def test_folders(client, collection):
    _, root = collection
    top = client.get("/api/folders").json()
    assert top["folder"] == path_to_uri(root) + "/" and top["total"] == 19 and top["images_here"] == 0
    assert [(c["folder"].rsplit("/", 2)[-2], c["images"]) for c in top["children"]] == [("a", 8), ("b", 11)]
    b = client.get("/api/folders", params={"parent": str(root / "b")}).json()
    assert b["images_here"] == 8 and [c["images"] for c in b["children"]] == [3]
    assert client.get("/api/folders", params={"parent": "x/../y"}).status_code == 422
    assert client.get("/api/folders", params={"parent": "/etc/../"}).json()["total"] == 0  # a filter, never a read


SIMILAR_90 = {"mode": "similar", "threshold": 0.9}


def test_look_alike_duplicates_threshold_and_export(client, collection):
    """mode=similar: images linked at cosine >= threshold (the browsing aid the verified default replaced)."""
    _, root = collection
    got = client.get("/api/duplicates", params=SIMILAR_90)
    while got.status_code == 202:
        got = client.get("/api/duplicates", params=SIMILAR_90)
    body = got.json()
    assert body["status"] == "ready" and body["images"] == 19
    original = path_to_uri(root / "b" / os.path.basename(sorted(os.listdir(root / "b"))[0]))
    group = next(g for g in body["groups"] if any(i["path"].endswith("__crop90.jpg") for i in g["images"]))
    assert group["size"] >= 3 and all(group["size"] >= g["size"] for g in body["groups"][1:] if g is not group) \
        or body["groups"][0]["size"] >= group["size"]
    assert group["images"][0]["width"] * group["images"][0]["height"] >= max(
        i["width"] * i["height"] for i in group["images"])  # the largest first: the one to keep
    assert original  # (the b photo's copies live under b/deep)
    strict = client.get("/api/duplicates", params={"mode": "similar", "threshold": 0.999}).json()
    assert strict["images_in_groups"] < body["images_in_groups"]
    csv_text = client.get("/api/duplicates", params={**SIMILAR_90, "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == body["images_in_groups"] and {"group", "path", "width", "bytes"} <= set(rows[0])
    assert client.get("/api/duplicates", params={"mode": "similar", "threshold": 0.3}).status_code == 422
    assert client.get("/api/duplicates", params={"limit": 501}).status_code == 422
    copy = next(i for i in group["images"] if i["path"].endswith("__crop90.jpg"))
    near = client.get(f"/api/images/{copy['id']}/duplicates", params={"threshold": 0.9}).json()
    assert {i["id"] for i in near} == {i["id"] for i in group["images"]} - {copy["id"]}
    assert all(i["score"] >= 0.9 for i in near)
    # the crop's look-alikes at 0.9 are its own versions: each verified as the same picture
    assert all(i["same_picture"] is not None for i in near), near
    assert client.get("/api/images/" + "f" * 32 + "/duplicates").status_code == 404


def ready(client, **params) -> dict:
    got = client.get("/api/duplicates", params=params)
    while got.status_code == 202:
        got = client.get("/api/duplicates", params=params)
    assert got.status_code == 200, got.text
    return got.json()


def test_duplicates_by_default_are_the_same_picture_verified(client, collection):
    """The default: one group, the b photo and its three edited copies (crop, half size, JPEG q40), each verified
    against the original with its evidence, the original proposed to keep; none of the 15 other photos joins."""
    _, root = collection
    body = ready(client)
    assert body["mode"] == "same" and body["images"] == 19 and body["skipped"] == []
    assert body["groups_total"] == 1 and body["images_in_groups"] == 4, body["groups"]
    g = body["groups"][0]
    copies_on_disk = sorted(p.name for p in (root / "b" / "deep").iterdir() if p.name != "broken.jpg")
    original = next(i for i in g["images"] if "__" not in i["name"])
    assert sorted(i["name"] for i in g["images"] if i is not original) == copies_on_disk
    assert all(n.startswith(os.path.splitext(original["name"])[0] + "__") for n in copies_on_disk)
    assert g["kind"] == "edited" and g["keep_id"] == original["id"] and original["relation"] == "representative"
    copies = [i for i in g["images"] if i is not original]
    assert {i["relation"] for i in copies} == {"copy"}
    half = next(i for i in copies if "resize50" in i["name"])
    assert "scaled" in half["evidence"]["edits"] and half["evidence"]["ncc"] >= 0.9
    assert all(i["thumbnail_url"].endswith("/thumbnail") for i in g["images"])
    rows = list(csv.DictReader(io.StringIO(client.get("/api/duplicates", params={"format": "csv"}).text)))
    assert len(rows) == 4 and {r["relation"] for r in rows} == {"representative", "copy"}
    assert [r["path"] for r in rows if r["keep"] == "True"] == [original["path"]]
    assert client.get("/api/duplicates", params={"mode": "all"}).status_code == 422


def test_status_lists_failures_and_the_last_run(client, collection):
    s = client.get("/api/status").json()
    assert s["count"] == 19 and s["model"] == "efficientnet_lite0" and s["dim"] == 1280 and s["index_type"] == "FLAT"
    assert s["failures_total"] == 1 and s["failures"][0]["path"].endswith("/deep/broken.jpg")
    assert "not an image" in s["failures"][0]["error"]
    run = s["last_run"]
    assert run["embedded"] == 19 and run["failed"] == 1 and run["count"] == 19 and run["engine"] == "local"


def test_delete_needs_the_key_and_updates_browse(client, collection):
    _, root = collection
    victim = browse(client, sort="name", limit=1)["items"][0]
    assert client.delete(f"/api/images/{victim['id']}").status_code == 401
    assert client.delete(f"/api/images/{victim['id']}", headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.delete(f"/api/images/{victim['id']}", headers={"X-API-Key": KEY}).status_code == 200
    after = browse(client, limit=200)
    assert after["total"] == 18 and victim["id"] not in {i["id"] for i in after["items"]}
    assert client.get(f"/api/images/{victim['id']}/meta").status_code == 404


def test_openapi_documents_every_view_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/api/images", "/api/folders", "/api/duplicates", "/api/status", "/api/search", "/api/tags",
                  "/api/images/{image_id}/meta", "/api/images/{image_id}/duplicates", "/api/images/{image_id}/similar"):
        assert route in paths, route
    params = {p["name"] for p in paths["/api/images"]["get"]["parameters"]}
    assert {"folder", "date_from", "date_to", "min_width", "format", "tag", "sort", "offset", "limit"} <= params
