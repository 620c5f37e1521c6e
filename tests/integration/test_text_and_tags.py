"""Search by words and by tags: CLIP models loaded from a weights file (random weights: nothing is downloaded),
text queries searched among image vectors of one collection, ImageNet auto-tags stored, filtered and shown, and
collections and datasets made before tags still working."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import copy_photos, settings
from imgsearch import dataset as dset
from imgsearch import pipeline
from imgsearch.errors import ImgSearchError, ModelError
from imgsearch.layout import embeddings_dir_for
from imgsearch.models import create_model, get_spec, list_models
from imgsearch.sources import path_to_uri

pytestmark = pytest.mark.slow
CLIP_MODELS = [m.name for m in list_models() if m.text]


def test_registry_lists_the_clip_family_and_the_tagging_models():
    assert {"clip_vit_b32", "clip_vit_b16", "mobileclip2_s0"} <= set(CLIP_MODELS)
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= {m.name for m in list_models()
                                                                                  if len(m.labels) == 1000}
    assert get_spec("efficientnet_lite0").labels[967] == "espresso"


@pytest.mark.parametrize("name", CLIP_MODELS)
def test_clip_towers_load_from_a_file(name, clip_weights, photo_paths, lite0):
    """Both towers come from the file given, give unit vectors of the registered dim, and the same file gives the
    same vectors again (the weights really are the file's, not a fresh random init)."""
    path = clip_weights(name)
    # the small model through the product's automatic runtime (ONNX here), the large ones through torch (faster
    # to load in a test; the ONNX path of the ViTs is the same export code)
    runtime = "auto" if name == "mobileclip2_s0" else "torch"
    emb = create_model(name, weights=path, runtime=runtime)
    spec = get_spec(name)
    from imgsearch.imaging import decode_image

    pixels = np.stack([decode_image(p.read_bytes(), emb.prep, 10**8).pixels for p in photo_paths[:3]])
    img = emb.embed(pixels)
    txt = emb.embed_text(["a dog on a beach", "a cup of coffee"])
    for v in (img, txt):
        assert v.shape[1] == spec.dim and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert not np.allclose(txt[0], txt[1])
    again = create_model(name, weights=path, runtime="torch")
    assert float(np.min(np.sum(again.embed(pixels) * img, axis=1))) >= 0.999
    np.testing.assert_allclose(again.embed_text(["a dog on a beach"])[0], txt[0], atol=1e-4)
    with pytest.raises(ModelError, match="no text encoder.*clip_vit_b32"):
        lite0.embed_text(["a dog"])


def test_missing_weights_offline_is_one_line_naming_the_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(ModelError) as exc:
        create_model("clip_vit_b32")
    msg = str(exc.value)
    assert "\n" not in msg and "open_clip_model.safetensors" in msg
    assert "huggingface.co/timm/vit_base_patch32_clip_224.openai" in msg and "--weights" in msg


def test_weights_of_another_architecture_are_refused(clip_weights):
    with pytest.raises(ModelError, match="clip_vit_b32: cannot load weights from .*mobileclip2_s0"):
        create_model("clip_vit_b32", weights=clip_weights("mobileclip2_s0"), runtime="torch")


@pytest.fixture(scope="module")
def clip_db(tmp_path_factory, photo_paths, clip_weights):
    work = tmp_path_factory.mktemp("clip")
    src = copy_photos(photo_paths, work / "photos")
    db = work / "clip.db"
    weights = str(clip_weights("mobileclip2_s0"))
    pipeline.index(str(src), str(db), "mobileclip2_s0", settings(), weights=weights, progress=False)
    return db, src, weights


def test_text_and_image_vectors_are_searched_in_one_collection(clip_db):
    """A text query is embedded by the collection's own model and ranked among its image vectors: the hits are
    exactly the exact-cosine ranking of the stored image vectors against the text vector."""
    db, src, weights = clip_db
    s = settings()
    res = pipeline.search(None, str(db), 5, s, text="a photo of a cat", weights=weights)
    table = dset.open_dataset(embeddings_dir_for(str(db), "mobileclip2_s0", s)).to_table()
    x = dset.vectors_of(table)
    q = create_model("mobileclip2_s0", weights=weights).embed_text(["a photo of a cat"])[0]
    expected = [table["id"][int(i)].as_py() for i in np.argsort(-(x @ q))[:5]]
    assert [h.id for h in res.hits] == expected
    np.testing.assert_allclose([h.score for h in res.hits], np.sort(x @ q)[::-1][:5], atol=1e-4)
    # an image query in the same collection still works: its own stored vector scores 1 (random weights make
    # many images near-ties, so scores are compared rather than order)
    img = pipeline.search(str(src / "skimage_coffee.png"), str(db), 3, s, weights=weights)
    own = x[table["path"].to_pylist().index(path_to_uri(src / "skimage_coffee.png"))]
    np.testing.assert_allclose([h.score for h in img.hits], np.sort(x @ own)[::-1][:3], atol=1e-4)
    assert img.hits[0].score > 0.999
    # CLIP models have no classifier head: no tags, and a keyword search says so
    assert all(t is None for t in table["tags"].to_pylist())
    with pytest.raises(ImgSearchError, match="gives no tags.*Search by text instead"):
        pipeline.search(None, str(db), 3, s, tags=["cat"])


def test_text_query_on_a_cnn_collection_is_a_clear_error(tmp_path, photo_paths):
    src = copy_photos(photo_paths[:4], tmp_path / "p")
    db = tmp_path / "cnn.db"
    pipeline.index(str(src), str(db), "efficientnet_lite0", settings(), progress=False)
    with pytest.raises(ImgSearchError, match="efficientnet_lite0.*no text encoder.*models that can: .*clip_vit_b32"):
        pipeline.search(None, str(db), 3, settings(), text="a dog")


@pytest.fixture(scope="module")
def tagged_db(tmp_path_factory, photo_paths):
    work = tmp_path_factory.mktemp("tags")
    src = copy_photos(photo_paths, work / "photos")
    db = work / "tags.db"
    pipeline.index(str(src), str(db), "efficientnet_lite0", settings(), progress=False)
    return db, src


def test_tags_are_stored_in_the_dataset_and_in_milvus(tagged_db):
    db, src = tagged_db
    s = settings()
    table = dset.open_dataset(embeddings_dir_for(str(db), "efficientnet_lite0", s)).to_table()
    rows = {r["path"]: r for r in table.to_pylist()}
    coffee = rows[path_to_uri(src / "skimage_coffee.png")]
    assert coffee["tags"][0] == "espresso" and coffee["tag_scores"][0] > 0.5
    for r in rows.values():  # best first, each above the keep threshold, at most 5
        assert r["tag_scores"] == sorted(r["tag_scores"], reverse=True) and len(r["tags"]) <= 5
        assert all(p >= 0.05 for p in r["tag_scores"]) and len(r["tags"]) == len(r["tag_scores"])
    from imgsearch.store import open_store

    with open_store(str(db), s) as store:
        info = store.collection_for()
        assert info.has_tags
        [got] = store.get(info, [coffee["id"]])
        assert got["tags"] == coffee["tags"] and got["format"] == "PNG"


def test_keyword_search_and_tag_filter_on_image_search(tagged_db):
    db, src = tagged_db
    s = settings()
    res = pipeline.search(None, str(db), 5, s, tags=["espresso"])
    assert [h.path for h in res.hits] == [path_to_uri(src / "skimage_coffee.png")]
    assert res.hits[0].tags[0] == "espresso" and res.hits[0].score > 0.5
    cats = pipeline.search(None, str(db), 5, s, tags=["cat"])  # word match: tiger cat, Egyptian cat, ...
    assert path_to_uri(src / "skimage_chelsea.png") in [h.path for h in cats.hits]
    assert all(any(t.endswith(" cat") for t in h.tags) for h in cats.hits)
    scores = [h.score for h in cats.hits]
    assert scores == sorted(scores, reverse=True)
    # image similarity restricted to a tag: only tagged images, in similarity order
    plain = pipeline.search(str(src / "skimage_chelsea.png"), str(db), 21, s)
    filtered = pipeline.search(str(src / "skimage_chelsea.png"), str(db), 21, s, tags=["cat"])
    assert [h.id for h in filtered.hits] == [h.id for h in plain.hits if h.id in {c.id for c in cats.hits}]
    with pytest.raises(ImgSearchError, match="no tag matches 'zzzz'.*ImageNet"):
        pipeline.search(None, str(db), 5, s, tags=["zzzz"])


def test_datasets_and_collections_made_before_tags_keep_working(tmp_path, photo_paths):
    """An old dataset (parts without the tag columns) mixed with new parts loads and searches; an old collection
    (no tag fields) searches, refuses tag queries with the way out, and `index --overwrite` brings it up to date."""
    s = settings()
    src = copy_photos(photo_paths[:6], tmp_path / "p")
    emb = tmp_path / "emb"
    pipeline.embed(str(src), str(emb), "efficientnet_lite0", s, progress=False)
    for part in dset.part_files(emb):  # rewrite as version 1 parts: no tags, no tag_scores
        t = pq.read_table(part)
        pq.write_table(t.drop_columns(["tags", "tag_scores"]), part)
    more = copy_photos(photo_paths[6:9], tmp_path / "p")  # noqa: F841 - new files: new-schema parts
    pipeline.embed(str(src), str(emb), "efficientnet_lite0", s, progress=False)
    t = dset.open_dataset(emb).to_table()
    assert t.num_rows == 9 and "tags" in t.column_names
    assert sum(v is None for v in t["tags"].to_pylist()) == 6  # old rows: tags absent, reported as null

    # an old collection: schema 1 (no format/tags fields), made as the previous version did
    from imgsearch.store import open_store

    db = tmp_path / "old.db"
    with open_store(str(db), s, create=True) as store:
        _make_schema1_collection(store, "efficientnet_lite0", 1280)
        store.upsert_batches(dset.iter_embedded(emb))
        info = store.collection_for()
        assert not info.has_tags and info.count == 9
    hits = pipeline.search(str(src / photo_paths[0].name), str(db), 3, s).hits
    assert hits[0].path == path_to_uri(src / photo_paths[0].name) and hits[0].tags == ()
    with pytest.raises(ImgSearchError, match="indexed before images had tags.*--overwrite"):
        pipeline.search(None, str(db), 3, s, tags=["espresso"])
    pipeline.index(str(src), str(db), "efficientnet_lite0", s, progress=False, overwrite=True)
    with open_store(str(db), s) as store:
        info = store.collection_for()
        assert info.has_tags and info.count == 9
    tagged = pipeline.search(None, str(db), 9, s, tags=["espresso"])
    assert all("espresso" in h.tags for h in tagged.hits)


def _make_schema1_collection(store, model, dim):
    import json

    from pymilvus import DataType, MilvusClient

    desc = json.dumps({"imgsearch": {"model": model, "dim": dim, "metric": "IP", "index_type": "FLAT", "schema": 1,
                                     "reducer": None}})
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=desc)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("path", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    for f in ("width", "height"):
        schema.add_field(f, DataType.INT32)
    schema.add_field("bytes", DataType.INT64)
    schema.add_field("mtime_us", DataType.INT64)
    params = store.client.prepare_index_params()
    params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    store.client.create_collection(f"images_{model}", schema=schema, index_params=params, consistency_level="Strong")


def test_query_expansion_is_alpha_qe_over_the_stored_vectors(tagged_db):
    """The default search re-queries with the query plus its 3 nearest images weighted by similarity^3: checked
    against the same computation in numpy over the dataset's vectors; --no-expand is the plain ranking."""
    from imgsearch.store import open_store
    from imgsearch.vectors import unit

    db, src = tagged_db
    s = settings()
    assert s.query_expansion == 3 and s.query_expansion_alpha == 3.0
    table = dset.open_dataset(embeddings_dir_for(str(db), "efficientnet_lite0", s)).to_table()
    ids, x = table["id"].to_pylist(), unit(dset.vectors_of(table))
    qi = table["path"].to_pylist().index(path_to_uri(src / "skimage_chelsea.png"))
    q = x[qi]
    sims = x @ q
    sims[qi] = -np.inf  # the query image itself is not one of its expansion neighbours
    near = np.argsort(-sims)[:3]
    q2 = unit((q + sum(max(float(sims[j]), 0) ** 3 * x[j] for j in near))[None])[0]
    expected = [ids[j] for j in np.argsort(-(x @ q2))[:6]]
    with open_store(str(db), s) as store:
        info = store.collection_for()
        got = store.search(info, q[None], 6, expand=3, exclude={ids[qi]})[0]
        plain = store.search(info, q[None], 6)[0]
    assert [h.id for h in got] == expected
    np.testing.assert_allclose([h.score for h in got], np.sort(x @ q2)[::-1][:6], atol=1e-4)
    assert [h.id for h in plain] == [ids[j] for j in np.argsort(-(x @ q))[:6]]
    # the CLI's default is the expanded search; --no-expand the plain one
    cli_default = pipeline.search(str(src / "skimage_chelsea.png"), str(db), 6, s)
    cli_plain = pipeline.search(str(src / "skimage_chelsea.png"), str(db), 6, settings(query_expansion=0))
    assert cli_plain.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.id for h in cli_default.hits] != [h.id for h in cli_plain.hits] or \
        [h.score for h in cli_default.hits] != [h.score for h in cli_plain.hits]
