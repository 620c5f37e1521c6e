from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch import dataset as dset
from imgsearch.errors import DatasetError


def make_table(n=5, dim=8, failed=(2,)):
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    cols = dset.empty_columns()
    vectors = []
    for i in range(n):
        cols["id"].append(f"id{i}")
        cols["path"].append(f"file:///x/{i}.jpg")
        cols["model"].append("m")
        cols["dim"].append(dim)
        cols["bytes"].append(100 + i)
        cols["mtime"].append(datetime(2026, 1, 1, tzinfo=timezone.utc))
        bad = i in failed
        cols["width"].append(None if bad else 10)
        cols["height"].append(None if bad else 20)
        cols["format"].append(None if bad else "JPEG")
        cols["error"].append("empty file" if bad else None)
        vectors.append(None if bad else vecs[i])
    return dset.to_table(cols, vectors), vecs


def test_round_trip_is_exact(tmp_path):
    table, vecs = make_table()
    part = dset.write_part(table, tmp_path)
    assert part.name.startswith("part-") and not list(tmp_path.glob(".*.tmp"))
    assert pq.read_schema(part).metadata[b"imgsearch.schema_version"] == b"1"
    batches = list(dset.iter_embedded(tmp_path))
    got = np.concatenate([dset.vectors_of(b) for b in batches])
    ids = sum((b.column("id").to_pylist() for b in batches), [])
    assert ids == ["id0", "id1", "id3", "id4"]
    assert np.array_equal(got, vecs[[0, 1, 3, 4]])  # bit-exact
    assert dset.read_failures(tmp_path) == [{"id": "id2", "path": "file:///x/2.jpg", "error": "empty file", "model": "m"}]
    s = dset.summarize(tmp_path)
    assert (s.rows, s.embedded, s.failed, s.models) == (5, 4, 1, {"m": 8})


def test_spark_layout_and_temp_files_are_ignored(tmp_path):
    table, _ = make_table(failed=())
    pq.write_table(table, tmp_path / "part-00000-abc.snappy.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-x.parquet.tmp").write_bytes(b"half a file")
    (tmp_path / "_temporary").mkdir()
    (tmp_path / "_temporary" / "part-9.parquet").write_bytes(b"uncommitted")
    assert [p.name for p in dset.part_files(tmp_path)] == ["part-00000-abc.snappy.parquet"]
    assert dset.summarize(tmp_path).embedded == 5


def test_missing_or_foreign_dataset_is_clear(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        dset.summarize(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no embeddings"):
        dset.summarize(tmp_path)
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1]}), tmp_path / "part-0.parquet")
    with pytest.raises(DatasetError, match="missing columns"):
        dset.summarize(tmp_path)
