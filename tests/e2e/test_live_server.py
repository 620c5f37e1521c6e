"""The served database file is owned by the server: a second writer gets a clear message and the data is intact."""

import json
import urllib.request

import pytest

from imgsearch import pipeline

from helpers import copy_photos, run_cli, settings
from imgsearch.server.live import live_server

pytestmark = pytest.mark.slow


def test_index_while_serving_fails_clearly_and_loses_nothing(tmp_path, photo_paths):
    src = copy_photos(photo_paths[:5], tmp_path / "photos")
    db = tmp_path / "live.db"
    pipeline.index(str(src), str(db), "efficientnet_lite0", settings(), progress=False)
    more = copy_photos(photo_paths[5:8], tmp_path / "more")
    with live_server(db) as url:
        res = run_cli("index", str(more), "--db", str(db))
        assert res.returncode == 1
        assert "in use by another process" in res.stderr and "serve" in res.stderr
        with urllib.request.urlopen(url + "/api/stats") as r:
            assert json.load(r)["count"] == 5
        with urllib.request.urlopen(url + "/metrics") as r:
            assert "imgsearch_index_images 5.0" in r.read().decode()
    # after the server stops, the same command works and nothing was lost
    res = run_cli("index", str(more), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert json.loads(run_cli("stats", "--db", str(db), "--json").stdout)["count"] == 8
