"""Near-duplicate groups in a collection: the same photo resized, re-encoded or slightly cropped.

Two images are linked when the cosine similarity of their embeddings reaches the threshold; groups are the connected
components of those links (union-find, strongest links first), so a chain original - half size - JPEG q30 ends in one
group even if its ends are less alike.

Two ways to find the links, the same answer where both run:
- exact (`find_links_exact`): blocked matrix products over all vectors, O(n^2 d): about a minute per
  100,000 x 1280 on 2 cores, so it is the path up to `EXACT_MAX` vectors; no pair can be missed.
- ANN (`find_links_ann`): an inverted-file index (faiss IVF-Flat, inner product) over the vectors, each vector's
  range search probes its `nprobe` nearest cells. Candidates come from the probed cells only, but their similarity is
  computed exactly on the full vectors, so a link is never wrong, only possibly missed; each pair is looked up from
  both ends. Its recall against exact search is measured on a random sample of rows in the same pass and reported.
  The vectors are streamed in batches: faiss holds the one copy, queries are read again batch by batch.

Default threshold, calibrated on the real sample photos (21 photos, each as 90% crop, half and quarter size, JPEG
q40 and q30): no two different photos scored above 0.55; a 90% crop, half size or JPEG copy scored >= 0.685 with its
original. At 0.70 the groups came out with pairwise precision 1.000 and recall 0.984 (one quarter-size copy of an
already small photo stayed apart); at 0.80 recall fell to 0.892. Raise it to keep burst shots of one scene apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from imgsearch.errors import ImgSearchError
from imgsearch.vectors import unit

DEFAULT_THRESHOLD = 0.70
EXACT_MAX = 100_000  # above this many vectors the ANN path is the default
RECALL_SAMPLE = 1000  # rows whose exact links are computed to measure the ANN path's recall

# A source of all vectors, readable several times in the same order: calling it yields float32 row blocks.
Batches = Callable[[], Iterator[np.ndarray]]


@dataclass
class Group:
    members: list[int]  # row indexes, the largest image (by pixels) first
    min_link: float  # the weakest similarity needed to join the group (its maximum spanning tree's weakest edge)


@dataclass
class Links:
    """Pairs i < j with their cosine similarity, and how they were found."""
    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    method: str = "exact"
    stats: dict = field(default_factory=dict)  # ANN: cells, nprobe, sample recall, seconds per pass


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def groups_from_links(n: int, links: Links, pixels: list[int] | None = None) -> list[Group]:
    """Connected components of >= 2 rows, largest groups first."""
    parent = np.arange(n)
    weakest: dict[int, float] = {}
    for k in np.argsort(-links.score, kind="stable").tolist():  # strongest first: Kruskal on the max spanning forest
        a, b = _find(parent, int(links.i[k])), _find(parent, int(links.j[k]))
        if a != b:
            parent[b] = a
            weakest[a] = min(weakest.get(a, 1.0), weakest.pop(b, 1.0), float(links.score[k]))
    members: dict[int, list[int]] = {}
    for i in np.unique(np.concatenate([links.i, links.j])).tolist() if len(links.i) else []:
        members.setdefault(_find(parent, i), []).append(i)
    size = pixels or [0] * n
    groups = [Group(sorted(m, key=lambda i: -size[i]), round(weakest.get(root, 1.0), 4))
              for root, m in members.items() if len(m) > 1]
    return sorted(groups, key=lambda g: (-len(g.members), g.members[0]))


def find_links_exact(vectors: np.ndarray, threshold: float, block: int = 2048) -> Links:
    x = unit(vectors)
    ii, jj, ss = [], [], []
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x[start:].T  # only pairs (i, j) with j >= i's block start
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows
        ii.append(rows[keep] + start)
        jj.append(cols[keep] + start)
        ss.append(sims[rows[keep], cols[keep]])
    return _links(ii, jj, ss, "exact")


def find_groups(vectors: np.ndarray, threshold: float = DEFAULT_THRESHOLD, pixels: list[int] | None = None,
                block: int = 2048) -> list[Group]:
    """Groups of >= 2 rows whose vectors are linked by cosine >= threshold (exact search), largest groups first."""
    return groups_from_links(len(vectors), find_links_exact(vectors, threshold, block), pixels)


def ann_cells(n: int) -> int:
    """IVF cells for n vectors: about 4 sqrt(n) (faiss's rule of thumb), at most 16,384, and at most n / 156 so
    that the k-means sample (40 per cell, what faiss asks for) stays within a quarter of the rows; a power of two."""
    want = min(16_384, n // 156, 4 * math.sqrt(max(n, 1)))
    return int(2 ** math.floor(math.log2(want))) if want >= 1 else 1


def find_links_ann(batches: Batches, n: int, dim: int, threshold: float, *, nprobe: int = 16,
                   cells: int | None = None, sample: int = RECALL_SAMPLE, seed: int = 0,
                   advance: Callable[[int], None] = lambda k: None) -> Links:
    """Links by IVF range search over vectors streamed from `batches` (three passes: sample, add, search).

    `advance` is called with rows done in each pass (3 n in all), for a progress bar."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - a dependency
        raise ImgSearchError("the ANN duplicates path needs faiss: pip install faiss-cpu") from None
    import time

    rng = np.random.default_rng(seed)
    cells = cells or ann_cells(n)
    train_n = min(n, 40 * cells)
    train_rows = np.sort(rng.choice(n, size=train_n, replace=False))
    sample_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    stats: dict = {"cells": cells, "nprobe": nprobe, "vectors": n}

    t0 = time.perf_counter()  # pass 1: training rows and the recall sample
    train = np.empty((train_n, dim), np.float32)
    probe = np.empty((len(sample_rows), dim), np.float32)
    for start, x in _numbered(batches(), dim, n):
        _take(train, train_rows, start, x)
        _take(probe, sample_rows, start, x)
        advance(len(x))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(train)
    del train
    stats["train_s"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()  # pass 2: every vector into the index (faiss holds the one copy)
    for _, x in _numbered(batches(), dim, n):
        index.add(x)
        advance(len(x))
    index.nprobe = min(nprobe, cells)
    stats["add_s"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()  # pass 3: range search from every vector; exact links of the sample rows alongside
    ii, jj, ss = [], [], []
    exact_i, exact_j = [], []
    for start, x in _numbered(batches(), dim, n):
        lims, scores, found = index.range_search(x, threshold)
        rows = np.repeat(np.arange(start, start + len(x)), np.diff(lims).astype(np.int64))
        keep = found != rows
        a, b = np.minimum(rows[keep], found[keep]), np.maximum(rows[keep], found[keep])
        ii.append(a)
        jj.append(b)
        ss.append(scores[keep])
        for sub in range(0, len(x), 1024):  # the sample's exact links, 1024 rows at a time (bounded memory)
            r, c = np.nonzero(probe @ x[sub:sub + 1024].T >= threshold)
            c = c + start + sub
            keep = sample_rows[r] != c
            exact_i.append(sample_rows[r][keep])
            exact_j.append(c[keep])
        advance(len(x))
    stats["search_s"] = round(time.perf_counter() - t0, 2)
    links = _links(ii, jj, ss, "ann")
    stats.update(_sample_recall(links, np.concatenate(exact_i) if exact_i else np.zeros(0, np.int64),
                                np.concatenate(exact_j) if exact_j else np.zeros(0, np.int64), len(sample_rows)))
    links.stats = stats
    return links


def _numbered(batches: Iterable[np.ndarray], dim: int, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row number, unit float32 rows) per batch; the source must give the n rows it promised, every time."""
    start = 0
    for x in batches:
        x = unit(np.ascontiguousarray(x, np.float32).reshape(-1, dim))
        yield start, x
        start += len(x)
    if start != n:
        raise ImgSearchError(f"the collection changed while it was read ({start} rows instead of {n}); run again")


def _take(dest: np.ndarray, wanted: np.ndarray, start: int, x: np.ndarray) -> None:
    lo, hi = np.searchsorted(wanted, [start, start + len(x)])
    dest[lo:hi] = x[wanted[lo:hi] - start]


def _links(ii: list, jj: list, ss: list, method: str) -> Links:
    if not ii:
        return Links(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), method)
    i, j, s = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64), np.concatenate(ss)
    key = i * (int(max(j.max(initial=0), i.max(initial=0))) + 1) + j
    _, first = np.unique(key, return_index=True)  # a pair found from both ends is one link
    return Links(i[first], j[first], s[first].astype(np.float32), method)


def _sample_recall(links: Links, exact_i: np.ndarray, exact_j: np.ndarray, sample: int) -> dict:
    """Share of the exact links of the sample rows that the ANN search found."""
    truth = {(min(a, b), max(a, b)) for a, b in zip(exact_i.tolist(), exact_j.tolist())}
    if not truth:
        return {"recall_sample_rows": sample, "recall_sample_links": 0, "recall": None}
    found = set(zip(links.i.tolist(), links.j.tolist()))
    return {"recall_sample_rows": sample, "recall_sample_links": len(truth),
            "recall": round(len(truth & found) / len(truth), 4)}


def pair_scores(groups: list[list[str]], truth: list[list[str]]) -> dict:
    """Pairwise precision and recall of predicted groups against true groups (lists of keys)."""
    def pairs(gs):
        out = set()
        for g in gs:
            g = sorted(g)
            out.update((a, b) for k, a in enumerate(g) for b in g[k + 1:])
        return out

    got, want = pairs(groups), pairs(truth)
    tp = len(got & want)
    return {"precision": tp / len(got) if got else 1.0, "recall": tp / len(want) if want else 1.0,
            "predicted_pairs": len(got), "true_pairs": len(want)}
