"""The query path, once: a collection's own model, its PCA reducer if it has one, and the check that they fit.

The CLI's one-off search, the service and evaluation all turn query images into vectors through a QueryEncoder, so
a query is always embedded and reduced exactly as the collection's vectors were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgsearch.config import Settings, cache_dir_of
from imgsearch.core import decode_record
from imgsearch.errors import ImgSearchError, ModelError
from imgsearch.models import Embedder, create_model
from imgsearch.reduce import Reducer, reducer_for
from imgsearch.sources import FileRecord, image_id, path_to_uri, read_bytes
from imgsearch.store import CollectionInfo


class QueryEncoder:
    """uint8 crops or image files -> vectors comparable with a collection's (same model, same reducer)."""

    def __init__(self, embedder: Embedder, reducer: Reducer | None = None, collection: CollectionInfo | None = None):
        expected = reducer.input_dim if reducer else (collection.dim if collection else embedder.dim)
        if embedder.dim != expected:
            have = f"{collection.dim}-d" if collection else f"{expected}-d input"
            raise ModelError(f"model {embedder.name} gives {embedder.dim}-d vectors but the collection holds {have}")
        self.embedder = embedder
        self.reducer = reducer
        self.prep = embedder.prep

    @classmethod
    def for_collection(cls, db: str, info: CollectionInfo, settings: Settings, *, weights: str | None = None,
                       threads: int | None = None, embedder: Embedder | None = None) -> "QueryEncoder":
        """The encoder of a stored collection: its recorded model, and its reducer from beside the database."""
        reducer = reducer_for(db, info, settings) if info.reducer else None
        emb = embedder or create_model(info.model, weights=weights, device=settings.device,
                                       precision=settings.precision, runtime=settings.runtime,
                                       cache_dir=cache_dir_of(settings),
                                       threads=settings.torch_threads if threads is None else threads)
        return cls(emb, reducer, info)

    @property
    def reducer_id(self) -> str | None:
        return self.reducer.id if self.reducer is not None else None

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 crops -> (N, dim) unit vectors in the collection's space."""
        vec = self.embedder.embed(pixels)
        return self.reducer.transform(vec) if self.reducer is not None else vec

    def encode_file(self, image_path: str, max_pixels: int) -> np.ndarray:
        """One query image file, decoded and preprocessed exactly as indexing does: (1, dim)."""
        if not Path(image_path).is_file():
            raise ImgSearchError(f"query image not found: {image_path}")
        uri = path_to_uri(image_path)
        outcome = decode_record(FileRecord(uri, image_id(uri), None, None), read_bytes, self.prep, max_pixels)
        if outcome.image is None:
            raise ImgSearchError(f"cannot use {image_path} as a query: {outcome.error}")
        return self.encode(outcome.image.pixels[None])
