
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch import dataset as dset
from imgsearch.errors import DatasetError

from helpers import make_table


def test_round_trip_is_exact(tmp_path):
    table, vecs = make_table()
    part = dset.write_part(table, tmp_path)
    assert Path(part).name.startswith("part-") and not list(tmp_path.glob(".*.tmp"))
    assert pq.read_schema(part).metadata[b"imgsearch.schema_version"] == dset.SCHEMA_VERSION.encode()
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
    assert [Path(p).name for p in dset.part_files(tmp_path)] == ["part-00000-abc.snappy.parquet"]
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
