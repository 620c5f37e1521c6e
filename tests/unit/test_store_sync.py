"""`index` brings the collection in line with the dataset, checked against a fake store (no Milvus): upsert what is
missing or stale, delete failed files and, with sync, files gone from the source; nothing of other sources."""

from datetime import datetime, timezone

import pytest

from helpers import settings, synthetic_record as rec, write_synthetic as write
from imgsearch import pipeline
from imgsearch.jobs import EmbedReport


class FakeStore:
    """The part of imgsearch.store.Store that sync_store uses, over a dict."""

    def __init__(self, rows=None):
        self.rows = dict(rows or {})  # id -> (path, bytes, mtime_us)
        self.upserted, self.inserted, self.deleted = [], [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def ensure_collection(self, model, dim):
        return f"images_{model}"

    def fields(self, name):
        from imgsearch.store import CURRENT_FIELDS

        return CURRENT_FIELDS

    def file_keys(self, name):
        return dict(self.rows)

    def upsert_batches(self, batches, batch_rows, insert=False, advance=lambda n: None):
        ids = [i for b in batches for i in b.column("id").to_pylist()]
        self.upserted += ids
        if insert:  # a plain insert of an id the store holds would make a duplicate row in Milvus
            assert not set(ids) & set(self.rows), "insert of ids the store already holds"
            self.inserted += ids
        return {"images_m": len(ids)}

    def delete(self, name, ids):
        self.deleted += list(ids)
        for i in ids:
            self.rows.pop(i, None)

    def count(self, name):
        return len(self.rows)


def us(dt):
    return int(dt.timestamp() * 1_000_000)


@pytest.fixture
def fake(monkeypatch, tiny_model):
    holder = {}

    def open_fake(db, s, create=False):
        return holder["store"]

    monkeypatch.setattr(pipeline, "open_store", open_fake)
    return holder


def test_upserts_missing_and_stale_deletes_failed_and_removed(tmp_path, fake):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    a, b, c, bad = rec("a"), rec("b", size=200), rec("c"), rec("bad")
    write(tmp_path, [a, b, c, bad], failed=("bad",))
    other = rec("z", root="file:///elsewhere")
    fake["store"] = store = FakeStore({
        a.id: (a.uri, 100, us(t0)),  # current: left alone
        b.id: (b.uri, 100, us(t0)),  # stale: the file changed size since it was loaded
        bad.id: (bad.uri, 100, us(t0)),  # now fails to decode: deleted
        rec("gone").id: (rec("gone").uri, 1, 1),  # no longer in the source: deleted only with sync
        other.id: (other.uri, 1, 1),  # another source's image: never touched
    })
    report = EmbedReport(out_dir=tmp_path, model="m", dim=4, root="file:///src")
    got = pipeline.sync_store(str(tmp_path), "x.db", "test_tiny", settings(), report)
    assert sorted(store.upserted) == sorted([b.id, c.id]) and store.deleted == [bad.id]
    assert store.inserted == [c.id]  # new to Milvus: inserted; b (stale, held) goes through an upsert
    assert got.deleted == 1 and got.failed_rows == 1
    pipeline.sync_store(str(tmp_path), "x.db", "test_tiny", settings(), report, sync=True)
    assert rec("gone").id in store.deleted and other.id in store.rows


def test_force_rewrites_every_vector(tmp_path, fake):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    a = rec("a")
    write(tmp_path, [a])
    fake["store"] = store = FakeStore({a.id: (a.uri, 100, us(t0))})
    report = EmbedReport(out_dir=tmp_path, model="m", dim=4, root="file:///src")
    pipeline.sync_store(str(tmp_path), "x.db", "test_tiny", settings(), report)
    assert store.upserted == []
    pipeline.sync_store(str(tmp_path), "x.db", "test_tiny", settings(), report, force=True)
    assert store.upserted == [a.id]
