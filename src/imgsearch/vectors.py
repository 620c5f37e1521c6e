"""Vector maths on unit vectors, in plain numpy: normalising, exact top-k, recall of one ranking against another.

Every store vector is L2-normalised, so inner product is cosine; the exact search here is the reference that ANN
indexes, PCA and evaluation are measured against.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def top_k(queries: np.ndarray, index: np.ndarray, k: int, block: int = 1024, exclude: np.ndarray | None = None,
          normalise: bool = True) -> np.ndarray:
    """Row numbers of the k rows of `index` most similar to each query (exact inner product), best first.

    `exclude`: for each query, one row of `index` that may not be returned (the query itself, leave-one-out).
    """
    q, x = (unit(queries), unit(index)) if normalise else (queries, index)
    k = min(k, len(x) - (1 if exclude is not None else 0))
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ x.T
        if exclude is not None:
            sims[np.arange(len(sims)), exclude[s:s + block]] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, 1).argsort(axis=1)[:, ::-1]
        out[s:s + block] = np.take_along_axis(part, order, 1)
    return out


def top_k_streamed(queries: np.ndarray, batches: Iterable[np.ndarray], k: int) -> np.ndarray:
    """`top_k` over an index read a batch at a time (unit rows, global row numbers): memory is queries x (k + one
    batch), never the whole index. Ties keep the earlier row, like a stable exact search."""
    q = unit(queries)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    start = 0
    for x in batches:
        sims = q @ np.asarray(x, np.float32).T
        s_all = np.concatenate([best_s, sims], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(x)), sims.shape)], axis=1)
        keep = min(k, s_all.shape[1])
        part = np.argpartition(-s_all, keep - 1, axis=1)[:, :keep]
        best_s, best_i = np.take_along_axis(s_all, part, 1), np.take_along_axis(i_all, part, 1)
        start += len(x)
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else best_i
    return np.take_along_axis(best_i, order, 1)


def take_rows(dest: np.ndarray, wanted: np.ndarray, start: int, x: np.ndarray) -> None:
    """Copy into `dest` the rows of batch `x` (global rows start..start+len(x)) that the sorted row numbers
    `wanted` ask for: how a few rows are picked out of a collection read a batch at a time."""
    lo, hi = np.searchsorted(wanted, [start, start + len(x)])
    dest[lo:hi] = x[wanted[lo:hi] - start]


def overlap_recall(found: list, truth: list, k: int) -> float:
    """Mean share of each true top-k that the found top-k holds (ANN vs exact, reduced vs full)."""
    return float(np.mean([len(set(list(a)[:k]) & set(list(e)[:k])) / k for a, e in zip(found, truth)]))
