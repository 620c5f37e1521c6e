"""Acceptance: modified copies of real photos find their original (top-3 always, top-1 for >= 90%)."""

import pytest

from helpers import settings

from imgsearch import pipeline
from imgsearch.models import create_model
from imgsearch.query import QueryEncoder
from imgsearch.samples import VARIANTS, write_variants
from imgsearch.sources import path_to_uri
from imgsearch.store import open_store

pytestmark = pytest.mark.slow


def test_modified_copies_find_their_original(tmp_path, photos_dir, photo_paths):
    assert len(photo_paths) >= 20
    db = str(tmp_path / "nd.db")
    rep = pipeline.index(str(photos_dir), db, "efficientnet_lite0", settings(), progress=False)
    assert rep.embed.embedded == len(photo_paths) and rep.embed.failed == 0
    variants = write_variants(photo_paths, tmp_path / "variants")
    encoder = QueryEncoder(create_model("efficientnet_lite0"))
    top1 = top3 = total = 0
    misses = []
    with open_store(db, settings()) as store:
        info = store.collection_for(None)
        for original, copies in variants.items():
            for copy in copies:
                hits = store.search(info, encoder.encode_file(str(copy), 10**8), k=3)[0]
                ranked = [h.path for h in hits]
                total += 1
                top1 += ranked[0] == path_to_uri(original)
                top3 += path_to_uri(original) in ranked
                if ranked[0] != path_to_uri(original):
                    misses.append((copy.name, ranked))
    assert total == len(photo_paths) * len(VARIANTS)
    print(f"near-duplicates: top1 {top1}/{total}, top3 {top3}/{total}, misses: {misses}")
    assert top3 == total, misses
    assert top1 >= 0.9 * total, misses
