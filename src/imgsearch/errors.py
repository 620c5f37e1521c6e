"""Errors a user can act on. The CLI prints their message on one line and exits non-zero; anything else is a bug."""


class ImgSearchError(Exception):
    """Base class: a problem the user can fix (bad input, missing weights, wrong database)."""


class ModelError(ImgSearchError):
    """Unknown model or missing/invalid weights."""


class StoreError(ImgSearchError):
    """The vector database is missing, busy, or holds a different model's vectors."""


class DatasetError(ImgSearchError):
    """An embeddings directory is missing, empty, or not in imgsearch's schema."""


class SourceError(ImgSearchError):
    """An image source cannot be listed or read."""
