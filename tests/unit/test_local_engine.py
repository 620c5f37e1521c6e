"""The shared core and the local engine with a tiny registered model: rows for every file, failures with their
reason from the one table, parts committed in bounded chunks, a failing forward pass recorded, not fatal."""

import numpy as np
import pytest

from helpers import copy_photos, settings
from imgsearch import dataset as dset
from imgsearch.core import decode_record, embed_outcomes
from imgsearch.engines.local import embed_records
from imgsearch.failures import Reason
from imgsearch.imaging import Preprocess
from imgsearch.jobs import EmbedJob
from imgsearch.sources import FileRecord, image_id, list_images, path_to_uri, read_bytes


def record(path, size=None):
    uri = path_to_uri(path)
    return FileRecord(uri, image_id(uri), size, None)


def test_failure_reasons_come_from_one_table(tmp_path, photo_paths):
    prep = Preprocess(crop=32, resize=36)
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "text.jpg").write_text("hello")
    big = copy_photos(photo_paths[:1], tmp_path / "big") / photo_paths[0].name
    cases = {
        "missing": (record(tmp_path / "missing.jpg"), Reason.DISAPPEARED.message()),
        "dir": (record(tmp_path / "dir.jpg"), Reason.IS_DIRECTORY.message()),
        "big": (record(big, size=big.stat().st_size), Reason.TOO_LARGE.message(limit=1000)),
    }
    for name, (r, want) in cases.items():
        assert decode_record(r, read_bytes, prep, 10**8, max_bytes=1000).error == want, name
    text = decode_record(record(tmp_path / "text.jpg"), read_bytes, prep, 10**8).error
    assert text and "image" in text.lower()
    ok = decode_record(record(big, size=big.stat().st_size), read_bytes, prep, 10**8, max_bytes=10**9)
    assert ok.error is None and ok.image.pixels.shape == (32, 32, 3)


def test_local_engine_commits_bounded_parts_and_records_failures(tmp_path, photo_paths, tiny_model):
    src = copy_photos(photo_paths[:7], tmp_path / "src")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    records = list(list_images(src))
    job = EmbedJob.from_settings(settings(rows_per_part=3), tiny_model, batch_size=2, progress=False)
    rep = embed_records(records, tmp_path / "out", job.create_embedder(), job)
    assert (rep.embedded, rep.failed) == (7, 1) and rep.failures[0][0].endswith("/broken.jpg")
    # a part is committed every 3 rows (batches of 2: after 4, 8 rows), the rest at the end
    assert [len(dset.read_rows([p], ["id"])["id"]) for p in rep.parts] == [4, 4]
    rows = dset.open_dataset(tmp_path / "out").to_table().to_pylist()
    assert {r["path"] for r in rows} == {r.uri for r in records}
    for r in rows:
        if r["error"] is None:
            v = np.asarray(r["vector"])
            assert len(v) == 8 and abs(float(v @ v) - 1) < 1e-5


class ExplodingEmbedder:
    name, dim, prep = "boom", 4, Preprocess(crop=32, resize=36)

    def embed_tagged(self, pixels):
        raise RuntimeError("out of memory\nsecond line")


def test_failing_forward_pass_becomes_failure_rows(tmp_path, photo_paths):
    outs = [decode_record(record(p), read_bytes, ExplodingEmbedder.prep, 10**8) for p in photo_paths[:3]]
    table = embed_outcomes(ExplodingEmbedder(), outs)
    assert table.num_rows == 3
    assert set(table.column("error").to_pylist()) == {"embedding failed: RuntimeError: out of memory"}


@pytest.mark.parametrize("mode", ["new", "replace"])
def test_remote_modes_on_a_local_folder(tmp_path, photo_paths, tiny_model, mode):
    from imgsearch.engines import create_engine
    from imgsearch.errors import DatasetError

    src = copy_photos(photo_paths[:2], tmp_path / "src")
    job = EmbedJob.from_settings(settings(), tiny_model, progress=False)
    with create_engine("local", settings()) as eng:
        recs = eng.list(str(src)).records
        eng.embed(str(src), recs, str(tmp_path / "out"), job)
        if mode == "new":
            with pytest.raises(DatasetError, match="already holds embeddings"):
                eng.embed(str(src), recs, str(tmp_path / "out"), job, mode="new")
        else:
            eng.embed(str(src), recs, str(tmp_path / "out"), job, mode="replace")
            assert dset.summarize(tmp_path / "out").rows == 2
