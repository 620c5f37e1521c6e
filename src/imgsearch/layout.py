"""Where things live on disk beside a database: thumbnails, uploads, reducers and the embeddings `index` keeps.

Plain path rules (no I/O but `resolve`), so every layer can ask them: the store, the reducer lookup, the service.
"""

from __future__ import annotations

import re
from pathlib import Path

from imgsearch.config import Settings

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
REDUCER_SUBDIR = "_reducer"  # inside a reduced dataset; '_' keeps it out of the Parquet readers


def is_server_uri(uri: str) -> bool:
    """A Milvus server URI (http://host:19530, ...) rather than a Milvus Lite file path."""
    return uri.startswith(_SERVER_SCHEMES)


def data_dir_for(db: str, settings: Settings) -> Path:
    """Where files that belong with a database live (thumbnails, uploads, reducers): IMGSEARCH_DATA_DIR if set,
    else the folder of a Milvus Lite file, else ./imgsearch-data for a server URI."""
    if settings.data_dir:
        return Path(settings.data_dir)
    if is_server_uri(db):
        return Path("imgsearch-data")
    return Path(db).expanduser().resolve().parent


def reducers_dir(db: str, settings: Settings) -> Path:
    """The PCA reducers of a database's reduced collections, one folder per reducer id."""
    return data_dir_for(db, settings) / "reducers"


def embeddings_root_for(db: str, settings: Settings) -> Path:
    """The folder holding the Parquet datasets `index` keeps beside a database, one per model."""
    name = Path(db).stem if not is_server_uri(db) else re.sub(r"[^0-9A-Za-z.-]+", "_", db.split("://", 1)[-1])
    return data_dir_for(db, settings) / f"{name}.embeddings"


def embeddings_dir_for(db: str, model: str, settings: Settings) -> Path:
    """The Parquet dataset `index` keeps beside a database: what makes reruns incremental and Milvus repairable."""
    return embeddings_root_for(db, settings) / model


def runs_log_for(db: str, settings: Settings) -> Path:
    """One JSON line per finished `index` run into the database (what the status view shows as the last run)."""
    return embeddings_root_for(db, settings).with_suffix(".runs.jsonl")
