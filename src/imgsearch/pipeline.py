"""Use cases the CLI (and later the server) call: embed, load, index, search. Plain functions over the stages."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsearch import dataset as dset
from imgsearch.config import get_settings
from imgsearch.core import FileRecord, decode_record
from imgsearch.engines.local import EmbedReport, embed_source
from imgsearch.errors import ImgSearchError, ModelError
from imgsearch.models import Embedder, create_model
from imgsearch.sources import image_id, path_to_uri, read_bytes
from imgsearch.store import CollectionInfo, Hit, Store, open_store


def make_embedder(model: str, weights: str | None = None, precision: str | None = None,
                  device: str | None = None) -> Embedder:
    s = get_settings()
    return create_model(model, weights=weights, device=device or s.device, precision=precision or s.precision,
                        threads=s.torch_threads)


def embed(src: str, out: str, model: str, *, weights: str | None = None, overwrite: bool = False,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None) -> EmbedReport:
    embedder = make_embedder(model, weights)
    return embed_source(src, out, embedder, batch_size=batch_size, workers=workers, overwrite=overwrite,
                        progress=progress)


@dataclass
class LoadReport:
    written: dict[str, int]
    failed_rows: int
    counts: dict[str, int]


def load(data_dir: str | os.PathLike[str], db: str) -> LoadReport:
    summary = dset.summarize(data_dir)
    s = get_settings()
    with open_store(db, create=True) as store:
        written = store.upsert_batches(dset.iter_embedded(data_dir), batch_rows=s.insert_batch)
        counts = {name: store.count(name) for name in written}
    return LoadReport(written=written, failed_rows=summary.failed, counts=counts)


@dataclass
class IndexReport:
    embed: EmbedReport
    load: LoadReport


def index(src: str, db: str, model: str, *, weights: str | None = None, out: str | None = None,
          batch_size: int | None = None, workers: int | None = None, progress: bool | None = None) -> IndexReport:
    """Embed + load. Without `out` the Parquet goes to a temporary folder that is removed after loading."""
    # Open (and so lock) the database first: a busy or wrong URI fails before minutes of embedding.
    with open_store(db, create=True):
        pass
    if out is not None:
        rep = embed(src, out, model, weights=weights, overwrite=True, batch_size=batch_size, workers=workers,
                    progress=progress)
        return IndexReport(rep, load(out, db))
    parent = Path(db).parent if not db.startswith(("http://", "https://", "tcp://")) else None
    with tempfile.TemporaryDirectory(prefix="imgsearch-embed-", dir=parent) as tmp:
        rep = embed(src, tmp, model, weights=weights, batch_size=batch_size, workers=workers, progress=progress)
        return IndexReport(rep, load(tmp, db))


@dataclass
class SearchResult:
    collection: CollectionInfo
    hits: list[Hit]


def query_vector(embedder: Embedder, image_path: str) -> np.ndarray:
    """Embed one query image file with the same decode + preprocessing as indexing."""
    if not Path(image_path).is_file():
        raise ImgSearchError(f"query image not found: {image_path}")
    uri = path_to_uri(image_path)
    outcome = decode_record(FileRecord(uri, image_id(uri), None, None), read_bytes, embedder.prep,
                            get_settings().max_pixels)
    if outcome.image is None:
        raise ImgSearchError(f"cannot use {image_path} as a query: {outcome.error}")
    return embedder.embed(outcome.image.pixels[None])


def search(image_path: str, db: str, k: int, *, model: str | None = None, weights: str | None = None) -> SearchResult:
    """Top-k most similar indexed images to an image file. The query is embedded by the collection's own model."""
    with open_store(db) as store:
        info = store.collection_for(model)
        embedder = make_embedder(info.model, weights)
        if embedder.dim != info.dim:
            raise ModelError(f"model {info.model} gives {embedder.dim}-d vectors but the collection holds {info.dim}-d")
        vec = query_vector(embedder, image_path)
        hits = store.search(info, vec, k)[0]
    return SearchResult(info, hits)


def stats(db: str) -> dict:
    with open_store(db) as store:
        infos = store.collections()
    total = sum(i.count for i in infos)
    out: dict = {"db": db, "count": total, "collections": [i.__dict__ for i in infos]}
    if len(infos) == 1:
        out["model"], out["dim"] = infos[0].model, infos[0].dim
    return out
