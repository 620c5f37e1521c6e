"""What makes big collections work, at small sizes: the index chosen by collection size (and rebuilt as it grows),
the ANN duplicates path against the exact one, and whole-collection paths that stream instead of holding every
vector (checked with tracemalloc, which sees numpy's buffers)."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from helpers import settings
from imgsearch import dataset as dset
from imgsearch import pipeline
from imgsearch import duplicates
from imgsearch.duplicates import NPROBE_STEPS, RECALL_SAMPLE, TRAIN_PER_CELL, ann_cells, find_links_ann, find_links_exact, groups_from_links
from imgsearch.errors import StoreError
from imgsearch.evaluation import run_ann
from imgsearch.layout import embeddings_dir_for
from imgsearch.store import CollectionRows, ivf_nlist, open_store, plan_index
from imgsearch.vectors import top_k, top_k_streamed, unit


def clustered(n: int, dim: int, seed: int = 0, copies: int = 0, noise: float = 0.02) -> np.ndarray:
    """Unit vectors around 40 centres (like embeddings: neighbours exist), the first `copies` rows each followed by
    a near-duplicate of itself."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.9 * rng.standard_normal((n, dim))
    for i in range(copies):
        x[2 * i + 1] = x[2 * i] + noise * np.linalg.norm(x[2 * i]) * rng.standard_normal(dim) / np.sqrt(dim)
    return unit(x.astype(np.float32))


def write_dataset(folder, x: np.ndarray, model: str = "test_tiny", first: int = 0, tagged: bool = False) -> None:
    """An embeddings dataset of the vectors `x` (as `index` keeps it), written in parts of 4096 rows; row i gets the
    id of number first + i (and with `tagged`, every third row two auto-tags)."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for start in range(0, len(x), 4096):
        cols = dset.empty_columns()
        rows = range(start, min(len(x), start + 4096))
        for i in rows:
            cols["id"].append(f"{first + i:032x}")
            cols["path"].append(f"file:///x/{first + i}.jpg")
            cols["model"].append(model)
            cols["dim"].append(x.shape[1])
            cols["bytes"].append(100)
            cols["mtime"].append(t0)
            cols["width"].append(10 + i % 7)
            cols["height"].append(10)
            cols["format"].append("JPEG")
            cols["error"].append(None)
            cols["tags"].append(["tabby cat", "tiger cat"] if tagged and i % 3 == 0 else None)
            cols["tag_scores"].append([0.5, 0.25] if tagged and i % 3 == 0 else None)
        dset.write_part(dset.to_table(cols, [x[i] for i in rows]), folder)


# -- the index by collection size ----------------------------------------------------------------------------------

def test_index_choice_by_collection_size():
    lite = {"server": False, "flat_max_floats": 64_000_000}
    assert plan_index(1_000, 1280, **lite).index_type == "FLAT"
    assert plan_index(50_000, 1280, **lite).index_type == "FLAT"  # 64M floats: still exact
    big = plan_index(1_000_000, 1280, **lite)
    assert big.index_type == "IVF_FLAT" and big.build == {"nlist": 4096} and big.search == {"nprobe": 128}
    assert plan_index(1_000_000, 256, **lite).index_type == "IVF_FLAT"
    assert plan_index(200_000, 256, **lite).index_type == "FLAT"  # narrower vectors stay exact longer
    for n in (1_000, 1_000_000):  # a server: HNSW at every size, with the settings' parameters
        p = plan_index(n, 1280, server=True, hnsw=(32, 300, 100))
        assert (p.index_type, p.build, p.search) == ("HNSW", {"M": 32, "efConstruction": 300}, {"ef": 100})
    assert ivf_nlist(100) == 64 and ivf_nlist(10_000_000) == 16_384  # clamped
    # the user overrides: an index type, the probes
    assert plan_index(10, 8, server=False, index_type="IVF_FLAT", nprobe=7).search == {"nprobe": 7}
    assert plan_index(10**6, 256, server=False, nlist=300).build == {"nlist": 300}
    assert plan_index(10**6, 1280, server=True, index_type="FLAT").index_type == "FLAT"
    with pytest.raises(StoreError, match="Milvus Lite has no HNSW"):
        plan_index(10, 8, server=False, index_type="HNSW")
    with pytest.raises(StoreError, match="index type"):
        plan_index(10, 8, server=False, index_type="ANNOY")


def test_lite_collection_moves_to_ivf_as_it_grows_and_stays_searchable(tmp_path):
    x = clustered(3000, 16, seed=1)
    data = tmp_path / "emb"
    write_dataset(data, x[:200])
    s = settings(lite_flat_max_floats=300 * 16)  # FLAT up to 300 vectors of 16 dims
    db = str(tmp_path / "grow.db")
    pipeline.load(data, db, s)
    with open_store(db, s) as store:
        [info] = store.collections()
        assert (info.count, info.index_type) == (200, "FLAT")
    write_dataset(data, x[200:], first=200)  # the collection grows past the FLAT limit
    pipeline.load(data, db, s)
    with open_store(db, s) as store:
        [info] = store.collections()
        assert (info.count, info.index_type, info.index_params) == (3000, "IVF_FLAT", {"nlist": ivf_nlist(3000)})
        assert store.fit_index(info.name, 16) is None  # nothing to rebuild on the next load
        hits = store.search(info, x[[5, 2500]], k=3)
        assert [h[0].id for h in hits] == [f"{5:032x}", f"{2500:032x}"]
    pipeline.load(data, db, s)  # again: rows held are upserted, none inserted twice
    with open_store(db, s) as store:
        assert store.count(store.collections()[0].name) == 3000
    assert "IVF_FLAT nlist=256" in pipeline_stats_line(db, s)
    rep = run_ann(db, s, queries=100, k=10, data=str(data))
    assert rep.details["search_params"] == {"nprobe": 16} and rep.metrics["recall@10"] >= 0.9


def pipeline_stats_line(db, s) -> str:
    from typer.testing import CliRunner

    from imgsearch import cli

    cli._S = s
    return CliRunner().invoke(cli.app, ["stats", "--db", db]).output


# -- duplicates: ANN path against the exact one --------------------------------------------------------------------

def test_ann_duplicates_find_the_exact_links_and_measure_their_own_recall():
    x = clustered(6000, 32, seed=2, copies=400, noise=0.4)  # 400 planted pairs among 6000 vectors
    exact = find_links_exact(x, 0.8)
    batches = lambda: (x[s:s + 1000] for s in range(0, len(x), 1000))  # noqa: E731
    ann = find_links_ann(batches, len(x), 32, 0.8, nprobe=8, sample=600)
    assert len(exact.i) >= 400
    truth = set(zip(exact.i.tolist(), exact.j.tolist()))
    found = set(zip(ann.i.tolist(), ann.j.tolist()))
    assert found <= truth  # candidates are verified exactly: never a false link
    recall = len(found) / len(truth)
    assert recall >= 0.99, recall
    np.testing.assert_allclose(np.sort(ann.score), np.sort(exact.score[[p in found for p in zip(exact.i.tolist(),
                                                                                               exact.j.tolist())]]),
                               rtol=1e-5)
    st = ann.stats
    assert st["cells"] == ann_cells(len(x)) == 32 and st["nprobe"] == 8 and st["recall_sample_rows"] == 600
    assert st["recall"] >= 0.98 and st["recall_sample_links"] > 0
    g_exact = groups_from_links(len(x), exact)
    g_ann = groups_from_links(len(x), ann)
    assert len(g_ann) >= 0.99 * len(g_exact)
    # wide vectors with most of their energy in a few directions (like embeddings): cells from 32-d projections,
    # links from the full 256 dims; nothing false, little missed, and the sample recall is the true recall
    rng = np.random.default_rng(4)
    wide = unit(clustered(4000, 24, seed=4, copies=300, noise=0.3) @ rng.standard_normal((24, 256))
                + 0.4 * rng.standard_normal((4000, 256)) / 16)
    exact_w = find_links_exact(wide, 0.8)
    wide_batches = lambda: (wide[s:s + 512] for s in range(0, len(wide), 512))  # noqa: E731
    proj = find_links_ann(wide_batches, len(wide), 256, 0.8, nprobe=4, coarse_dims=32, sample=4000)
    truth_w = set(zip(exact_w.i.tolist(), exact_w.j.tolist()))
    found_w = set(zip(proj.i.tolist(), proj.j.tolist()))
    assert found_w <= truth_w and len(truth_w) >= 300 and len(found_w) >= 0.99 * len(truth_w)
    assert proj.stats["recall"] == pytest.approx(len(found_w) / len(truth_w), abs=1e-4)  # the sample: every row
    assert proj.stats["compared_pairs"] < 0.35 * len(wide) ** 2  # 4 of 16 cells: far fewer products than exact
    # probing one cell of 32 misses links, and the sample says so
    poor = find_links_ann(batches, len(x), 32, 0.8, nprobe=1, sample=600)
    assert poor.stats["recall"] < st["recall"]
    # nprobe 0: the fewest cells whose recall on the sample reaches the target, known before the search runs (a
    # pair is found when one end probes the other's cell): the recall then measured from the links is the predicted
    for target in (0.9, 0.99):
        auto = find_links_ann(wide_batches, len(wide), 256, 0.8, coarse_dims=32, sample=1000, target_recall=target)
        chosen = auto.stats["nprobe"]
        assert auto.stats["nprobe_chosen"].startswith("auto") and auto.stats["recall"] >= target
        assert auto.stats["recall"] == auto.stats["recall_predicted"]
        lower = [p for p in NPROBE_STEPS if p < chosen]
        if lower:  # the step below misses the target: the choice is the fewest
            below = find_links_ann(wide_batches, len(wide), 256, 0.8, coarse_dims=32, sample=1000, nprobe=lower[-1])
            assert below.stats["recall"] < target and below.stats["nprobe_chosen"] == "given"


# -- memory-bounded streaming --------------------------------------------------------------------------------------

N, DIM = 8_000, 1280  # 41 MB of vectors, as wide as the default model's; each path below may hold a small part


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    s = settings()
    db = str(tmp / "big.db")
    x = clustered(N, DIM, seed=3, copies=50, noise=0.3)
    data = embeddings_dir_for(db, "test_tiny", s)  # where `index` keeps it: the streaming paths read it from there
    write_dataset(data, x)
    return db, s, x, data


def test_whole_collection_paths_stream(big_db, monkeypatch):
    db, s, x, data = big_db
    whole = x.nbytes
    load_peak = peak_bytes(lambda: pipeline.load(data, db, s))
    with open_store(db, s) as store:
        [info] = store.collections()
        assert info.count == N
        rows = CollectionRows(store, info, ["id"], data)
        assert rows.source == "dataset"
        # the check can fail: reading the collection into memory is seen
        assert peak_bytes(rows.materialise) >= whole
        stream_peak = peak_bytes(lambda: sum(len(v) for v in rows.vectors()))
        q = x[:50]
        exact = [[f"{j:032x}" for j in row] for row in top_k(q, x, 10)]
        order = [i for cols, _ in rows for i in cols["id"]]  # the stream's row order (the dataset's parts)
        assert [[order[j] for j in row] for row in top_k_streamed(q, rows.vectors(), 10)] == exact
        topk_peak = peak_bytes(lambda: top_k_streamed(q, rows.vectors(), 10))
    ann_peak = peak_bytes(lambda: run_ann(db, s, queries=30, k=10))
    dup = {}
    monkeypatch.setattr(duplicates, "ROWS_AT_ONCE", 512)  # its blocks, small beside this small collection
    monkeypatch.setattr(duplicates, "COARSE_FIT_MIN", 1024)
    dup_peak = peak_bytes(lambda: dup.update(pipeline.duplicates(db, s, threshold=0.8, method="ann",
                                                                               verify=False)))
    assert dup["method"] == "ann" and dup["search"]["recall"] >= 0.95 and len(dup["groups"]) >= 45
    peaks = {"load": load_peak, "stream": stream_peak, "top_k": topk_peak, "eval ann": ann_peak,
             "duplicates ann": dup_peak}
    print({k: f"{v / whole:.2f} x collection" for k, v in peaks.items()})
    # the ANN search also holds its k-means sample, its recall sample, the rows it compares with one cell at once
    # and the sample's covariance with its eigen-decomposition (workspace, eigenvectors): sizes fixed by the dim
    train = max(TRAIN_PER_CELL * ann_cells(N), 1024)
    fixed = {"duplicates ann": (train + RECALL_SAMPLE + 2 * 512) * DIM * 4 + DIM * DIM * 24}
    for name, peak in peaks.items():
        assert peak < 0.35 * whole + fixed.get(name, 0), (name, peak, whole)


# -- bulk import into a Milvus server ------------------------------------------------------------------------------

def test_bulk_import_into_a_server_stores_what_inserts_store(tmp_path):
    """With an import folder, new rows reach a server as Parquet files it imports itself; the collection then holds
    exactly what the insert path stores (vectors, scalars, tags), a rerun adds nothing, rows a killed load's
    unfinished imports add are not imported again, and a folder that cannot be written is a clear error."""
    from imgsearch.milvus_standalone import executable, milvus_standalone
    from imgsearch.store import BulkImport

    if executable() is None:
        pytest.skip("milvus-server (PyPI package 'milvus') not installed")
    x = clustered(3000, 16, seed=7)
    data = tmp_path / "emb"
    write_dataset(data, x, tagged=True)
    more = tmp_path / "more"
    write_dataset(more, clustered(500, 16, seed=8), first=3000)
    imports = tmp_path / "imports"
    s = settings(milvus_import_dir=str(imports))
    lite = str(tmp_path / "lite.db")
    pipeline.load(data, lite, settings())
    with milvus_standalone(tmp_path / "milvus-data", port=19530) as uri:
        assert pipeline.load(data, uri, s).counts == {"images_test_tiny": 3000}
        assert list(imports.iterdir()) == []  # the import files are removed once imported
        ids = [f"{i:032x}" for i in (0, 1, 2999)]  # tagged, untagged, last
        with open_store(uri, s) as srv, open_store(lite, settings()) as ref:
            info, ref_info = srv.collection_for(None), ref.collection_for(None)
            assert srv.count(info.name) == 3000 and info.index_type == "HNSW"
            got = sorted(srv.get(info, ids, with_vectors=True), key=lambda r: r["id"])
            want = sorted(ref.get(ref_info, ids, with_vectors=True), key=lambda r: r["id"])
            for g, w in zip(got, want):
                np.testing.assert_allclose(g.pop("vector"), w.pop("vector"), rtol=1e-6)
                assert g == w
            hits = srv.search(info, x[[5, 2500]], k=1, consistency="Strong")
            assert [h[0].id for h in hits] == [f"{5:032x}", f"{2500:032x}"]
        pipeline.load(data, uri, s)  # again: held rows go through upserts, nothing is imported twice
        # a killed load: its import was submitted and never waited for; the next load waits for it first
        with open_store(uri, s) as srv:
            name = srv.collection_for(None).name
            left = BulkImport(srv, name, 16)
            left.add(pa.Table.from_batches(list(dset.iter_embedded(more))), srv.fields(name))
            left._submit()
        pipeline.load(more, uri, s)
        with open_store(uri, s) as srv:
            rows = [r["id"] for batch in srv.rows(name, ["id"]) for r in batch]
            assert len(rows) == len(set(rows)) == 3500
        bad = settings(milvus_import_dir=str(tmp_path / "lite.db" / "x"))  # under a file: cannot be made
        write_dataset(tmp_path / "newer", clustered(10, 16, seed=9), first=4000)
        with pytest.raises(StoreError, match="cannot write bulk-import files"):
            pipeline.load(tmp_path / "newer", uri, bad)
