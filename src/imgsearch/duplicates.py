"""Near-duplicate groups in a collection: the same photo resized, re-encoded or slightly cropped.

Two images are linked when the cosine similarity of their embeddings reaches the threshold; groups are the connected
components of those links (union-find, strongest links first), so a chain original - half size - JPEG q30 ends in one
group even if its ends are less alike.

Two ways to find the links, the same answer where both run:
- exact (`find_links_exact`): blocked matrix products over all vectors, O(n^2 d): about a minute per
  100,000 x 1280 on 2 cores, so it is the path up to `EXACT_MAX` vectors; no pair can be missed.
- ANN (`find_links_ann`): candidates from an inverted-file index (faiss IVF-Flat, inner product) over the vectors'
  projections on their top principal directions, with a margin that the projection's residuals bound; then the exact
  cosine of each candidate from the full vectors, so a link is never wrong, only possibly missed; each pair is
  looked up from both ends. Its recall against exact search is measured on a random sample of rows in the same pass
  and reported. The full vectors are streamed once into a memory-mapped file (the one copy, in the page cache).

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
CANDIDATE_DIMS = 256  # the ANN path looks for candidates among projections on this many principal directions
QUERY_BLOCK = 1024  # rows range-searched at once (bounds the candidate arrays)
VERIFY_PAIRS = 1024  # candidate pairs verified at once: 2 x 1024 full rows gathered (10 MB at 1280 dims)

# A source of all vectors: calling it yields float32 row blocks (the ANN search reads it once).
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
                   candidate_dims: int = CANDIDATE_DIMS, workdir: str | None = None,
                   advance: Callable[[int], None] = lambda k: None) -> Links:
    """Links by IVF range search over vectors streamed once from `batches`, in three steps:

    1. stream: the vectors go to a float32 file on disk (memory-mapped: the one full copy, in the page cache, not in
       this process's heap); their second-moment matrix and the recall sample are gathered on the way;
    2. candidates: each vector projected on the top `candidate_dims` eigenvectors (y = P x, |y| <= 1, residual
       r = sqrt(1 - |y|^2)); since x.x' = y.y' + (residual dot) >= t implies y.y' >= t - r r', an IVF index over the
       y's is range-searched at radius t - margin (margin = the 99th-percentile r squared: the bound holds for every
       pair of the 99% best-projected vectors) and pairs are kept where y.y' >= t - r r';
    3. verification: the exact cosine of each candidate pair from the full vectors; links are those >= t.
    Misses come from unprobed cells and from pairs whose residuals exceed the margin; the exact links of `sample`
    random rows are computed alongside, and the recall against them is reported in `stats`.
    `advance` is called with rows done in each of the two passes (stream, search: 2 n in all), for a progress bar."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - a dependency
        raise ImgSearchError("the ANN duplicates path needs faiss: pip install faiss-cpu") from None
    import os
    import tempfile
    import time

    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    stats: dict = {"vectors": n, "dim": dim, "nprobe": nprobe}
    fd, path = tempfile.mkstemp(prefix="imgsearch-duplicates-", suffix=".f32", dir=workdir)
    os.close(fd)
    try:
        t0 = time.perf_counter()  # 1: stream to disk, second moments, the sample
        full = np.memmap(path, np.float32, mode="w+", shape=(max(n, 1), dim))
        moment = np.zeros((dim, dim), np.float64)
        for start, x in _numbered(batches(), dim, n):
            full[start:start + len(x)] = x
            moment += x.T @ x
            advance(len(x))
        full.flush()
        probe = np.asarray(full[sample_rows])
        k = min(candidate_dims, dim)
        if k < dim:
            eig, vec = np.linalg.eigh(moment)
            basis = np.ascontiguousarray(vec[:, np.argsort(eig)[::-1][:k]], np.float32)
        else:
            basis = None
        del moment

        def project(lo: int, hi: int) -> np.ndarray:  # computed again where needed: no n x k copy is kept
            blk = np.asarray(full[lo:hi])
            return np.ascontiguousarray(blk @ basis) if basis is not None else blk

        resid = np.zeros(n, np.float32)
        if basis is not None:
            for start in range(0, n, 8192):
                y = project(start, start + 8192)
                resid[start:start + len(y)] = np.sqrt(np.clip(1.0 - np.einsum("ij,ij->i", y, y), 0.0, None))
        margin = float(np.quantile(resid, 0.99) ** 2) if basis is not None else 0.0
        if basis is not None and margin > threshold / 2:  # the projection keeps too little: search the full vectors
            k, basis, margin = dim, None, 0.0
            resid[:] = 0.0
        stats.update(candidate_dims=k, margin=round(margin, 4), stream_s=round(time.perf_counter() - t0, 2))

        t0 = time.perf_counter()  # 2: an IVF index over the projections, range search
        cells = cells or ann_cells(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(k), k, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        train = np.asarray(full[np.sort(rng.choice(n, size=min(n, 40 * cells), replace=False))])
        index.train(np.ascontiguousarray(train @ basis) if basis is not None else train)
        del train
        for start in range(0, n, 8192):
            index.add(project(start, start + 8192))
        index.nprobe = min(nprobe, cells)
        stats["cells"] = cells
        ii, jj, ss = [], [], []
        exact_i, exact_j = [], []
        candidates = 0
        for start in range(0, n, QUERY_BLOCK):
            q = project(start, start + QUERY_BLOCK)
            lims, scores, found = index.range_search(q, threshold - margin)
            rows = np.repeat(np.arange(start, start + len(q)), np.diff(lims).astype(np.int64))
            keep = found != rows  # a pair is looked up from both ends (one may miss it); duplicates merge below
            rows, found, scores = rows[keep], found[keep], scores[keep]
            ok = scores >= threshold - resid[rows] * resid[found]  # the bound, pair by pair
            rows, found = rows[ok], found[ok]
            candidates += len(rows)
            for c0 in range(0, len(rows), VERIFY_PAIRS):  # 3: exact cosine from the full vectors, chunk by chunk
                a, b = rows[c0:c0 + VERIFY_PAIRS], found[c0:c0 + VERIFY_PAIRS]
                s_exact = np.einsum("ij,ij->i", np.asarray(full[a]), np.asarray(full[b]))
                hit = s_exact >= threshold
                ii.append(np.minimum(a[hit], b[hit]))
                jj.append(np.maximum(a[hit], b[hit]))
                ss.append(s_exact[hit])
            blk = np.asarray(full[start:start + len(q)])
            r, c = np.nonzero(probe @ blk.T >= threshold)  # the sample's exact links, for the recall figure
            c = c + start
            keep = sample_rows[r] != c
            exact_i.append(sample_rows[r][keep])
            exact_j.append(c[keep])
            advance(len(q))
        stats.update(candidates=candidates, search_s=round(time.perf_counter() - t0, 2))
        del index
    finally:
        os.unlink(path)
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
