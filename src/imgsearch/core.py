"""The shared core every engine schedules: one file's bytes -> decoded crop or failure; a batch -> embedding rows.

Engines differ only in how they list files, move bytes and run these functions in parallel; what a row contains is
decided here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from imgsearch.dataset import empty_columns, to_table
from imgsearch.failures import Reason
from imgsearch.imaging import DecodedImage, DecodeError, Preprocess, decode_image
from imgsearch.models import Embedder
from imgsearch.sources import FileRecord


def worker_log(path: str, line: str) -> None:
    """Append a line to the work log (Settings.worker_log), if one is set: tests and benchmarks count model loads
    and the rows each batch embedded with it, including those of runs that were then killed."""
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


@dataclass
class Outcome:
    record: FileRecord
    image: DecodedImage | None = None
    error: str | None = None


def failed(record: FileRecord, reason: Reason, **detail) -> Outcome:
    return Outcome(record, error=reason.message(**detail))


def read_record(record: FileRecord, read: Callable[[str], bytes], max_bytes: int | None = None) -> bytes | Outcome:
    """One file's bytes, or the failure that stopped reading them (a listed size over `max_bytes` is refused
    without a read: both engines use one limit)."""
    if max_bytes is not None and record.size is not None and record.size > max_bytes:
        return failed(record, Reason.TOO_LARGE, limit=max_bytes)
    try:
        return read(record.uri)
    except FileNotFoundError:
        return failed(record, Reason.DISAPPEARED)
    except PermissionError:
        return failed(record, Reason.PERMISSION)
    except IsADirectoryError:
        return failed(record, Reason.IS_DIRECTORY)
    except OSError as exc:
        return failed(record, Reason.READ_ERROR, detail=exc.strerror or exc)


def decode_record(record: FileRecord, read: Callable[[str], bytes] | bytes | Outcome, prep: Preprocess,
                  max_pixels: int, max_bytes: int | None = None) -> Outcome:
    """Read (if given a reader) and decode one file; any failure becomes an Outcome with a one-line reason.
    `read` may also be the bytes, or the failed Outcome, that `read_record` already gave."""
    data = read if isinstance(read, (bytes, bytearray, memoryview, Outcome)) else read_record(record, read, max_bytes)
    if isinstance(data, Outcome):
        return data
    try:
        return Outcome(record, image=decode_image(bytes(data), prep, max_pixels))
    except DecodeError as exc:
        return failed(record, Reason.DECODE, detail=exc)


# Auto-tags kept per image: the classifier's best labels, at most TAGS_TOP, each with probability >= TAG_MIN_SCORE.
TAGS_TOP = 5
TAG_MIN_SCORE = 0.05


def top_tags(probs: np.ndarray, labels: Sequence[str], top: int = TAGS_TOP,
             min_score: float = TAG_MIN_SCORE) -> tuple[list[list[str]], list[list[float]]]:
    """Per row of class probabilities: the labels of the best classes (best first) and their probabilities."""
    k = min(top, probs.shape[1])
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    tags, scores = [], []
    for row, idx in zip(probs, best):
        keep = [int(i) for i in idx if row[i] >= min_score]
        tags.append([labels[i] for i in keep])
        scores.append([round(float(row[i]), 4) for i in keep])
    return tags, scores


def embed_outcomes(embedder: Embedder, outcomes: Sequence[Outcome]) -> pa.Table:
    """Embed the decoded outcomes in one forward pass and return one row per outcome (failures included), with the
    model's auto-tags where it has a classifier head."""
    good = [o for o in outcomes if o.image is not None]
    vectors: np.ndarray | None = None
    tags: tuple[list, list] | None = None
    if good:
        try:
            vectors, probs = embedder.embed_tagged(np.stack([o.image.pixels for o in good]))  # type: ignore[union-attr]
            if probs is not None:
                tags = top_tags(probs, embedder.labels)
        except Exception as exc:  # a failing forward pass must not lose the rest of the job
            reason = Reason.EMBED.message(
                detail=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            for o in good:
                o.error, o.image = reason, None
            good = []
    return _table(outcomes, vectors, embedder.name, embedder.dim, tags)


def failure_table(outcomes: Sequence[Outcome], model: str, dim: int) -> pa.Table:
    """Rows for outcomes that all failed (no model needed): the listing's and the driver's own failures."""
    return _table(outcomes, None, model, dim)


def _table(outcomes: Sequence[Outcome], vectors: np.ndarray | None, model: str, dim: int,
           tags: tuple[list, list] | None = None) -> pa.Table:
    cols = empty_columns()
    vec_list: list[np.ndarray | None] = []
    gi = 0
    for o in outcomes:
        rec = o.record
        cols["id"].append(rec.id)
        cols["path"].append(rec.uri)
        cols["model"].append(model)
        cols["dim"].append(dim)
        cols["bytes"].append(rec.size)
        cols["mtime"].append(rec.mtime)
        if o.image is not None and vectors is not None:
            vec_list.append(vectors[gi])
            gi += 1
            cols["width"].append(o.image.width)
            cols["height"].append(o.image.height)
            cols["format"].append(o.image.format)
            cols["error"].append(None)
            cols["tags"].append(tags[0][gi - 1] if tags else None)
            cols["tag_scores"].append(tags[1][gi - 1] if tags else None)
        else:
            vec_list.append(None)
            cols["width"].append(None)
            cols["height"].append(None)
            cols["format"].append(None)
            cols["error"].append(o.error or "unknown error")
            cols["tags"].append(None)
            cols["tag_scores"].append(None)
    return to_table(cols, vec_list)
