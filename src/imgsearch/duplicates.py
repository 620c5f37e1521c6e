"""Near-duplicate groups in a collection: the same photo resized, re-encoded or slightly cropped.

Two images are linked when the cosine similarity of their embeddings reaches the threshold; groups are the connected
components of those links (union-find, strongest links first), so a chain original - half size - JPEG q30 ends in one
group even if its ends are less alike.

Two ways to find the links, the same answer where both run:
- exact (`find_links_exact`): blocked matrix products over all vectors, O(n^2 d): about a minute per
  100,000 x 1280 on 2 cores, so it is the path up to `EXACT_MAX` vectors; no pair can be missed.
- ANN (`find_links_ann`): an inverted-file search run cell by cell as matrix products. The vectors are streamed once
  into a memory-mapped file (the one full copy, in the page cache); k-means cells (faiss) over a sample's top
  principal directions; each vector probes its `nprobe` nearest cells, and every cell's probers are compared with the
  cell's own vectors in one matrix product of the full vectors, so each score is exact: a link is never wrong, only
  possibly missed (neither end probed the other's cell). Its recall against exact search is measured on a random
  sample of rows in the same run and reported. On 1M x 1280 (synthetic, bench scale) on 2 AVX2 cores: auto nprobe 24
  of 2,048 cells, 311 s in all at recall 0.993 (next run: nprobe 32, 408 s, 0.994), where the former
  candidates-then-verify design took 27 min at 0.978.

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
COARSE_DIMS = 128  # the ANN path's cells: k-means cells of projections on this many principal directions
TRAIN_PER_CELL = 40  # k-means sample rows per cell (what faiss asks for)
COARSE_FIT_MIN = 2048  # at least this many rows for the principal directions
KMEANS_ITERATIONS = 20
TARGET_RECALL = 0.99  # the ANN path's automatic nprobe reaches this recall on its sample of exact links
MAX_NPROBE = 64  # at most this many cells probed per vector by the automatic choice
NPROBE_STEPS = (4, 8, 12, 16, 24, 32, 48)  # the automatic choice tries these, then MAX_NPROBE
ROWS_AT_ONCE = 2048  # rows of a cell compared with as many of its probers: 2 x 2048 x 1280 gathered (21 MB)

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


def top_links(vectors: np.ndarray, k: int, floor: float, block: int = 2048) -> Links:
    """Candidate pairs: each row with its `k` most similar rows at cosine >= `floor` (exact, blocked); a pair is
    kept when either end has the other among its k, so every row brings at most k candidates."""
    x = unit(vectors)
    n = len(x)
    ii, jj, ss = [], [], []
    k = min(k, max(n - 1, 0))
    if k == 0:
        return _links(ii, jj, ss, "exact")
    for start in range(0, n, block):
        sims = x[start:start + block] @ x.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not itself
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        score = sims[rows[:, None], near]
        r, c = np.nonzero(score >= floor)
        a, b = r + start, near[r, c]
        ii.append(np.minimum(a, b))
        jj.append(np.maximum(a, b))
        ss.append(score[r, c])
    return _links(ii, jj, ss, "exact")


def cap_links(links: Links, n: int, k: int) -> Links:
    """The links among each row's `k` strongest (a pair stays when it is among either end's k)."""
    if len(links.i) == 0:
        return links
    ends = np.concatenate([links.i, links.j])
    score = np.concatenate([links.score, links.score])
    order = np.lexsort((-score, ends))  # by row, strongest first
    rank = np.empty(len(order), np.int64)
    starts = np.searchsorted(ends[order], np.arange(n))
    rank[order] = np.arange(len(order)) - starts[ends[order]]
    m = len(links.i)
    keep = (rank[:m] < k) | (rank[m:] < k)
    return Links(links.i[keep], links.j[keep], links.score[keep], links.method, links.stats)


@dataclass
class VerifiedGroup:
    members: list[int]  # the representative (largest image) first
    relation: dict[int, object]  # member -> what verification said of it against the representative


def verified_groups(links: Links, verify: Callable[[int, int], object | None], pixels: list[int],
                    same: Callable[[object], bool]) -> tuple[list[VerifiedGroup], int]:
    """Groups in which every member was verified against the group's representative, never only through another
    member (no chaining: a flag never joins another flag through a chain of look-alikes).

    Representatives are taken largest image first; each takes the candidates (`links`) of itself and of the members it
    has taken so far that are still free and that `verify(representative, candidate)` says are the same picture
    (`same(verdict)`). `verify` returns None when it cannot decide (an unreadable file): the pair is skipped.
    Returns the groups (largest first) and the number of times `verify` was asked."""
    near: dict[int, set[int]] = {}
    for a, b in zip(links.i.tolist(), links.j.tolist()):
        near.setdefault(a, set()).add(b)
        near.setdefault(b, set()).add(a)
    taken: set[int] = set()
    groups: list[VerifiedGroup] = []
    runs = 0
    for rep in sorted(near, key=lambda i: (-pixels[i], i)):
        if rep in taken:
            continue
        members, relation = [rep], {}
        asked, frontier = {rep}, sorted(near[rep])
        while frontier:
            nxt = []
            for c in frontier:
                if c in asked or c in taken:
                    continue
                asked.add(c)
                verdict = verify(rep, c)
                runs += 1
                if verdict is not None and same(verdict):
                    members.append(c)
                    relation[c] = verdict
                    nxt.extend(sorted(near.get(c, ())))  # the member's candidates are asked against rep too
            frontier = nxt
        if len(members) > 1:
            taken.update(members)
            groups.append(VerifiedGroup(members, relation))
    return sorted(groups, key=lambda g: (-len(g.members), g.members[0])), runs


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


def find_links_ann(batches: Batches, n: int, dim: int, threshold: float, *, nprobe: int = 0,
                   target_recall: float = TARGET_RECALL, cells: int | None = None, sample: int = RECALL_SAMPLE,
                   seed: int = 0, coarse_dims: int = COARSE_DIMS, workdir: str | None = None,
                   advance: Callable[[int], None] = lambda k: None) -> Links:
    """Links by an inverted-file search over vectors streamed once from `batches`, run cell by cell as matrix products:

    1. stream: the vectors go to a float32 file on disk (memory-mapped: the one full copy, in the page cache, not in
       this process's heap);
    2. cells: k-means (faiss) on a sample's projections onto its top `coarse_dims` principal directions; every row
       then gets its nearest cells in order (the first is its own). The centroids lie in that subspace, so a row's
       nearest cells by projection are its nearest cells, full width;
    3. the exact links of `sample` random rows (one matrix product per block of all rows). A pair is found exactly
       when one end probes the other's cell, so these links tell the recall every nprobe will have before the search
       runs: nprobe 0 (auto) takes the smallest reaching `target_recall` on the sample (at most MAX_NPROBE);
    4. search, cell by cell: every row that probes a cell is compared with the cell's own rows in one matrix product
       of the full vectors; links are the exact cosines >= t, so a link is never wrong, only possibly missed.
    `stats` reports the recall on the sample measured from the links found (equal to the one predicted in step 3).
    `advance` is called with rows done in each of the two passes (stream, search: 2 n in all)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - a dependency
        raise ImgSearchError("the ANN duplicates path needs faiss: pip install faiss-cpu") from None
    import os
    import tempfile
    import time

    rng = np.random.default_rng(seed)
    cells = min(cells or ann_cells(n), max(n, 1))
    width = min(nprobe or MAX_NPROBE, cells)  # nearest cells kept per row
    sample_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    train_rows = np.sort(rng.choice(n, size=min(n, max(TRAIN_PER_CELL * cells, COARSE_FIT_MIN)), replace=False))
    stats: dict = {"vectors": n, "dim": dim, "cells": cells}
    fd, path = tempfile.mkstemp(prefix="imgsearch-duplicates-", suffix=".f32", dir=workdir)
    os.close(fd)
    try:
        t0 = time.perf_counter()  # 1: stream to disk
        full = np.memmap(path, np.float32, mode="w+", shape=(max(n, 1), dim))
        for start, x in _numbered(batches(), dim, n):
            full[start:start + len(x)] = x
            advance(len(x))
        full.flush()
        stats["stream_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()  # 2: cells from the sample's principal directions, each row's nearest cells
        train = np.asarray(full[train_rows])
        k = min(coarse_dims, dim)
        mean = train.mean(axis=0)
        cov = train.T @ train  # the covariance, built in place: no centred copy of the sample
        cov /= len(train)
        cov -= np.outer(mean, mean)
        eig, vec = np.linalg.eigh(cov)
        del cov
        basis = np.ascontiguousarray(vec[:, np.argsort(eig)[::-1][:k]], np.float32)
        kmeans = faiss.Kmeans(k, cells, niter=KMEANS_ITERATIONS, seed=seed, max_points_per_centroid=TRAIN_PER_CELL)
        kmeans.train(np.ascontiguousarray(train @ basis))
        del train
        probes = np.empty((n, width), np.int16 if cells < 2**15 else np.int32)
        for start in range(0, n, 8192):
            _, near = kmeans.index.search(np.ascontiguousarray(np.asarray(full[start:start + 8192]) @ basis), width)
            probes[start:start + len(near)] = near
        stats["cells_s"] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()  # 3: the sample's exact links; the nprobe they call for
        probe = np.asarray(full[sample_rows])
        exact_i, exact_j = [], []
        for start in range(0, n, ROWS_AT_ONCE):
            r, c = np.nonzero(probe @ np.asarray(full[start:start + ROWS_AT_ONCE]).T >= threshold)
            c = c + start
            keep = sample_rows[r] != c
            exact_i.append(sample_rows[r][keep])
            exact_j.append(c[keep])
        del probe
        pairs = np.zeros((0, 2), np.int64)
        if exact_i:  # each pair once (two sample rows may link to each other)
            ends = np.concatenate(exact_i), np.concatenate(exact_j)
            pairs = np.unique(np.stack([np.minimum(*ends), np.maximum(*ends)], axis=1), axis=0)
        exact_i, exact_j = pairs[:, 0], pairs[:, 1]
        stats["nprobe_chosen"] = "given" if nprobe else f"auto (recall >= {target_recall} on the sample)"
        nprobe, predicted = nprobe_for(probes, exact_i, exact_j, target_recall, width, fixed=bool(nprobe))
        if nprobe < width:
            probes = np.ascontiguousarray(probes[:, :nprobe])
        stats.update(nprobe=nprobe, recall_predicted=predicted, recall_s=round(time.perf_counter() - t0, 2))

        t0 = time.perf_counter()  # 4: per cell, its probers against its own rows
        own = np.argsort(probes[:, 0], kind="stable")  # rows by their own cell
        own_lo = np.searchsorted(probes[own, 0], np.arange(cells + 1))
        flat = probes.ravel()
        by_cell = np.argsort(flat, kind="stable")  # (row, probe) slots by cell probed
        probe_lo = np.searchsorted(flat[by_cell], np.arange(cells + 1))
        del flat, probes
        ii, jj, ss = [], [], []
        compared = 0
        for c in range(cells):
            members = own[own_lo[c]:own_lo[c + 1]]
            probers = by_cell[probe_lo[c]:probe_lo[c + 1]] // nprobe
            if len(members) == 0 or len(probers) == 0:
                continue
            for m0 in range(0, len(members), ROWS_AT_ONCE):  # blocks bound the gathered rows and the scores
                own_rows = members[m0:m0 + ROWS_AT_ONCE]
                xm = np.asarray(full[own_rows])
                for p0 in range(0, len(probers), ROWS_AT_ONCE):
                    rows = probers[p0:p0 + ROWS_AT_ONCE]
                    sims = np.asarray(full[rows]) @ xm.T
                    r, m = np.nonzero(sims >= threshold)
                    a, b = rows[r], own_rows[m]
                    keep = a != b
                    a, b = a[keep], b[keep]
                    ii.append(np.minimum(a, b))
                    jj.append(np.maximum(a, b))
                    ss.append(sims[r[keep], m[keep]])
            compared += len(probers) * len(members)
            advance(len(members))
        del by_cell, own
        stats.update(compared_pairs=compared, search_s=round(time.perf_counter() - t0, 2))
    finally:
        os.unlink(path)
    links = _links(ii, jj, ss, "ann")
    stats.update(_sample_recall(links, exact_i, exact_j, len(sample_rows)))
    links.stats = stats
    return links


def nprobe_for(probes: np.ndarray, exact_i: np.ndarray, exact_j: np.ndarray, target: float, most: int,
               fixed: bool = False) -> tuple[int, float | None]:
    """The smallest nprobe (up to `most`, of the widths `probes` holds: each row's nearest cells, its own first) at
    which the search finds at least `target` of the given exact links (a pair is found when either end probes the
    other's cell), with the share it finds; `fixed`: `most` itself, with its share."""
    a, b = probes[exact_i], probes[exact_j]
    for p in ([] if fixed else [q for q in NPROBE_STEPS if q < most]) + [most]:
        found = ((a[:, :p] == b[:, :1]).any(axis=1) | (b[:, :p] == a[:, :1]).any(axis=1)).mean() if len(a) else None
        if found is None or found >= target or p == most:
            return p, None if found is None else round(float(found), 4)
    raise AssertionError("unreachable")


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
