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
from imgsearch.models import Embedder, create_model, get_spec, list_models
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
        emb = embedder or create_model(info.model, weights=weights or settings.weights or None, device=settings.device,
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

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Text queries -> (N, dim) unit vectors in the collection's space (image-text models only)."""
        vec = self.embedder.embed_text(texts)
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


MAX_TEXT_CHARS = 300  # CLIP reads 77 tokens; longer text is cut by the tokenizer anyway


def text_models() -> list[str]:
    return [m.name for m in list_models() if m.text]


def tagging_models() -> list[str]:
    return [m.name for m in list_models() if m.tags]


def check_text(model: str, text: str) -> str:
    """The text query, trimmed; ImgSearchError if it is empty or the collection's model has no text encoder."""
    text = " ".join(text.split())
    if not text:
        raise ImgSearchError("empty text query")
    if len(text) > MAX_TEXT_CHARS:
        raise ImgSearchError(f"text query too long: at most {MAX_TEXT_CHARS} characters")
    if not get_spec(model).text:
        raise ImgSearchError(f"this collection's model ({model}) has no text encoder, so it cannot be searched by "
                             f"text; models that can: {', '.join(text_models())}. Search by tag (keyword) or image")
    return text


def match_tags(model: str, keywords: list[str]) -> list[str]:
    """The model's tag labels a keyword search means: the labels that contain each of the keyword's words, ignoring
    case ("cat" -> tiger cat, Persian cat, ...); if none does, those with words that start with them ("retriev").
    ImgSearchError if the model gives no tags, or no label matches (with a hint of what exists)."""
    labels = get_spec(model).labels
    if not labels:
        raise ImgSearchError(f"this collection's model ({model}) gives no tags; models that tag images: "
                             f"{', '.join(tagging_models())}" + (". Search by text instead" if get_spec(model).text
                                                                   else ""))
    words = [_words(k) for k in keywords if k and k.strip()]
    if not words:
        raise ImgSearchError("empty tag query")
    label_words = [(label, _words(label)) for label in labels]
    out: list[str] = []
    for kw in words:
        # whole words first ("cat": tiger cat, not catamaran); word starts only when no label has the words
        exact = [lb for lb, lw in label_words if all(q in lw for q in kw)]
        out += exact or [lb for lb, lw in label_words if all(any(w.startswith(q) for w in lw) for q in kw)]
    out = list(dict.fromkeys(out))
    if not out:
        raise ImgSearchError(f"no tag matches {', '.join(map(repr, keywords))}: tags are the names of ImageNet's "
                             f"1,000 classes (e.g. {', '.join(labels[i] for i in (967, 281, 817, 949))}); "
                             "GET /api/tags lists them")
    return out


def _words(text: str) -> list[str]:
    return [w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if w]
