import subprocess
import sys

import numpy as np
import pytest

from imgsearch.errors import StoreError
from imgsearch.store import open_store

from helpers import make_table, settings


def load_table(db, table):
    with open_store(str(db), settings(), create=True) as store:
        return store.upsert_batches(table.to_batches(max_chunksize=2), batch_rows=2)


def test_upsert_is_idempotent_and_survives_reopen(tmp_path):
    db = tmp_path / "x.db"
    table, vecs = make_table(n=7, failed=())
    assert load_table(db, table) == {"images_m": 7}
    assert load_table(db, table) == {"images_m": 7}
    with open_store(str(db), settings()) as store:
        [info] = store.collections()
        assert (info.model, info.dim, info.count) == ("m", 8, 7)
        q = vecs[3] / np.linalg.norm(vecs[3])
        hits = store.search(info, q[None], k=3)[0]
        assert hits[0].id == "id3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[0].path == "file:///x/3.jpg"
        with pytest.raises(StoreError, match="8-d"):
            store.search(info, np.ones((1, 4), np.float32), k=1)
        with pytest.raises(StoreError, match="no vectors of model 'other'"):
            store.collection_for("other")


def test_missing_db_and_bad_uri_are_clear(tmp_path):
    with pytest.raises(StoreError, match="no index at"):
        open_store(str(tmp_path / "missing.db"), settings())
    with pytest.raises(StoreError, match="ends in .db"):
        open_store(str(tmp_path / "file.sqlite"), settings())
    with open_store(str(tmp_path / "empty.db"), settings(), create=True) as store:
        with pytest.raises(StoreError, match="no image collection yet"):
            store.collection_for(None)


def test_second_process_gets_a_clear_busy_error(tmp_path):
    db = tmp_path / "busy.db"
    table, _ = make_table(failed=())
    load_table(db, table)
    with open_store(str(db), settings()):
        code = (
            "import sys\nfrom imgsearch.config import Settings\nfrom imgsearch.store import open_store\n"
            "from imgsearch.errors import StoreError\n"
            f"try:\n    open_store({str(db)!r}, Settings())\nexcept StoreError as e:\n    print(e); sys.exit(3)\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "in use by another process" in res.stdout
