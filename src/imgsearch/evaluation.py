"""Search quality on the user's own data: near-duplicate retrieval, labelled retrieval, ANN against exact search.

The metric functions are plain numpy over unit vectors (exact cosine ranking), so they can be checked by hand; the
`run_*` functions embed folders with the same engine and model as indexing and call them.

* near-duplicate: modified copies of each original (crop, resize, JPEG q30, rotation +-10 deg, flip, colour jitter)
  are searched among the originals plus any distractors; recall@k = share of copies whose original is in the top k.
* labelled: sub-folders are classes; every image queries all the others (leave-one-out). P@1 = share of queries
  whose nearest image has its class; recall@k = share with at least one image of its class in the top k (the R@k of
  image-retrieval papers); mAP = mean over queries of average precision over the whole ranking.
* ANN vs exact: the collection's own index (FLAT on Milvus Lite, HNSW on a server) against exact top-k computed here
  from every stored vector; recall@k = mean overlap / k.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsearch.config import Settings
from imgsearch.errors import ImgSearchError
from imgsearch.vectors import overlap_recall, take_rows, top_k, top_k_streamed, unit

NEAR_DUP_TRANSFORMS = ("crop80", "resize50", "jpeg30", "rotate10", "rotate-10", "hflip", "jitter")


def near_dup_recall(queries: np.ndarray, targets: np.ndarray, index: np.ndarray,
                    ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """recall@k: share of queries whose target row (index into `index`) is among their k nearest."""
    if len(queries) == 0:
        raise ImgSearchError("no queries to evaluate")
    top = top_k(queries, index, max(ks))
    return {f"recall@{k}": float(np.mean([t in row[:k] for t, row in zip(targets, top)])) for k in ks}


def labelled_metrics(vectors: np.ndarray, labels: list[str], ks: tuple[int, ...] = (1, 5, 10),
                     queries: np.ndarray | None = None) -> dict[str, float]:
    """Leave-one-out retrieval: mAP, P@1 and recall@k (at least one same-class image in the top k). `queries`: the
    rows' query vectors if they differ from the stored ones (query expansion); each still skips its own row."""
    lab = np.asarray(labels)
    n = len(lab)
    if n < 2:
        raise ImgSearchError("need at least two labelled images")
    x = unit(vectors)
    sims = (unit(queries) if queries is not None else x) @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]  # self (at -inf) is last: dropped
    rel = lab[order] == lab[:, None]
    n_rel = rel.sum(axis=1)
    ranks = np.arange(1, n)
    ap = np.where(n_rel > 0, (np.cumsum(rel, axis=1) / ranks * rel).sum(axis=1) / np.maximum(n_rel, 1), np.nan)
    out = {"mAP": float(np.nanmean(ap)), "P@1": float(rel[:, 0].mean())}
    for k in ks:
        out[f"recall@{k}"] = float(rel[:, :k].any(axis=1).mean())
    out["queries"] = int(n)
    out["queries_without_a_match"] = int((n_rel == 0).sum())
    return out


# -- neighbour-quality variants: post-processing of one set of vectors (no re-embedding) -------------------------

QE_NEIGHBOURS, QE_ALPHA = 3, 3.0


def alpha_query_expansion(x: np.ndarray, n: int = QE_NEIGHBOURS, alpha: float = QE_ALPHA) -> np.ndarray:
    """alpha-QE (Radenovic et al.): each query becomes itself plus its n nearest other rows weighted by
    similarity^alpha, re-normalised; the expanded query is searched again (one more search per query)."""
    x = unit(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    w = np.clip(np.take_along_axis(sims, nb, axis=1), 0, None) ** alpha
    return unit(x + np.einsum("qn,qnd->qd", w, x[nb]))


def centred(x: np.ndarray) -> np.ndarray:
    """The collection's mean removed, rows re-normalised: shared 'background' directions stop counting as similarity."""
    return unit(x - x.mean(axis=0, keepdims=True))


def pca_reduced(x: np.ndarray, dims: int = 256, whiten: bool = False) -> np.ndarray:
    """PCA to `dims` (at most half the rows), optionally whitened, fitted on the collection itself, as
    `imgsearch index --reduce DIMS [--whiten]` does."""
    from imgsearch.reduce import fit_batches

    d = int(min(dims, max(2, len(x) // 2), x.shape[1]))
    return fit_batches([x], "eval", dims=d, whiten=whiten).transform(x)


POSTPROCESSING = ("none", "alpha-QE", "centred", "centred + alpha-QE", "PCA-256", "PCA-256 + alpha-QE",
                  "PCA-256 whitened")


def postprocessed_metrics(vectors: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """labelled_metrics of each post-processing variant of the same vectors (POSTPROCESSING names them)."""
    x = unit(vectors)
    c = centred(x)
    p = pca_reduced(x, 256)
    out = {"none": labelled_metrics(x, labels),
           "alpha-QE": labelled_metrics(x, labels, queries=alpha_query_expansion(x)),
           "centred": labelled_metrics(c, labels),
           "centred + alpha-QE": labelled_metrics(c, labels, queries=alpha_query_expansion(c)),
           "PCA-256": labelled_metrics(p, labels),
           "PCA-256 + alpha-QE": labelled_metrics(p, labels, queries=alpha_query_expansion(p)),
           "PCA-256 whitened": labelled_metrics(pca_reduced(x, 256, whiten=True), labels)}
    return out


# -- running on folders -------------------------------------------------------------------------------------------

@dataclass
class Embedded:
    paths: list[str]
    vectors: np.ndarray
    failed: int = 0


def embed_folder(folder: str | os.PathLike[str], model: str, settings: Settings, *, weights: str | None = None,
                 work: str | os.PathLike[str] | None = None) -> Embedded:
    """Embed every image under a folder with the indexing engine (so evaluation sees what indexing produces)."""
    from imgsearch import dataset as dset
    from imgsearch import pipeline

    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-", dir=work) as tmp:
        rep = pipeline.embed(str(folder), str(Path(tmp) / "emb"), model, settings, weights=weights, progress=False)
        paths, vecs = [], []
        if rep.embedded:
            for b in dset.iter_embedded(Path(tmp) / "emb", columns=("path", "vector")):
                paths += b.column("path").to_pylist()
                vecs.append(dset.vectors_of(b))
    return Embedded(paths, np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32), rep.failed)


@dataclass
class EvalReport:
    kind: str
    metrics: dict
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"kind": self.kind, **self.metrics, "details": self.details, "seconds": round(self.seconds, 1)}


def run_near_dup(folder: str, model: str, settings: Settings, *, distractors: list[str] = (), transforms: tuple[str, ...] =
                 NEAR_DUP_TRANSFORMS, max_originals: int | None = None, weights: str | None = None,
                 seed: int = 0) -> EvalReport:
    """Near-duplicate retrieval: copies of the images under `folder` searched among them plus `distractors`."""
    import random

    from PIL import Image

    from imgsearch.samples import make_variant
    from imgsearch.sources import list_images, path_to_uri, uri_to_path

    started = time.perf_counter()
    originals = [r.uri for r in list_images(folder)]
    if max_originals and len(originals) > max_originals:
        originals = sorted(random.Random(seed).sample(originals, max_originals))
    if not originals:
        raise ImgSearchError(f"no images under {folder}")
    with tempfile.TemporaryDirectory(prefix="imgsearch-eval-copies-") as tmp:
        copy_of: dict[str, tuple[str, str]] = {}  # copy uri -> (original uri, transform)
        for i, uri in enumerate(originals):
            try:
                with Image.open(uri_to_path(uri)) as im:
                    im.load()
                    for kind in transforms:
                        variant, opts = make_variant(im, kind)
                        target = Path(tmp) / f"{i:06d}__{kind}.jpg"
                        variant.save(target, "JPEG", **opts)
                        copy_of[path_to_uri(target)] = (uri, kind)
            except (OSError, ValueError):
                continue  # an original Pillow cannot open is simply not a query
        queries = embed_folder(tmp, model, settings, weights=weights)
    base = embed_folder(folder, model, settings, weights=weights)  # every image of the folder is in the index
    index_paths, index_vecs = list(base.paths), base.vectors
    n_distr = len(base.paths) - len(set(originals) & set(base.paths))
    for d in distractors:
        extra = embed_folder(d, model, settings, weights=weights)
        index_paths += extra.paths
        index_vecs = np.concatenate([index_vecs, extra.vectors])
        n_distr += len(extra.paths)
    pos = {p: i for i, p in enumerate(index_paths)}
    q_rows = [i for i, p in enumerate(queries.paths) if copy_of[p][0] in pos]
    targets = np.array([pos[copy_of[queries.paths[i]][0]] for i in q_rows])
    qv = queries.vectors[q_rows]
    metrics = near_dup_recall(qv, targets, index_vecs)
    per = {}
    for kind in transforms:
        rows = [j for j, i in enumerate(q_rows) if copy_of[queries.paths[i]][1] == kind]
        if rows:
            per[kind] = near_dup_recall(qv[rows], targets[rows], index_vecs)
    details = {"originals": len(set(originals) & set(base.paths)), "distractors": n_distr, "queries": len(q_rows),
               "transforms": list(transforms), "per_transform": per, "model": model}
    return EvalReport("near-duplicate", metrics, details, time.perf_counter() - started)


def run_labelled(folder: str, model: str, settings: Settings, *, weights: str | None = None) -> EvalReport:
    """Leave-one-out retrieval over a folder whose immediate sub-folders are the classes."""
    from imgsearch.sources import path_to_uri

    started = time.perf_counter()
    root = Path(folder)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if len(classes) < 2:
        raise ImgSearchError(f"{folder}: a labelled folder has one sub-folder per class (found {len(classes)})")
    emb = embed_folder(folder, model, settings, weights=weights)
    prefix = {c: path_to_uri(root / c) + "/" for c in classes}
    labels = []
    for p in emb.paths:
        labels.append(next((c for c, pre in prefix.items() if p.startswith(pre)), "(top level)"))
    metrics = labelled_metrics(emb.vectors, labels)
    counts = {c: labels.count(c) for c in classes}
    details = {"classes": len(classes), "images": len(labels), "failed": emb.failed, "model": model,
               "smallest_class": min(counts.values()), "largest_class": max(counts.values()),
               "variants": {k: {m: round(v[m], 4) for m in ("mAP", "P@1", "recall@5")}
                            for k, v in postprocessed_metrics(emb.vectors, labels).items()}}
    return EvalReport("labelled", metrics, details, time.perf_counter() - started)


def run_ann(db: str, settings: Settings, *, queries: int = 200, k: int = 10, model: str | None = None, collection: str | None = None,
            seed: int = 0, data: str | None = None) -> EvalReport:
    """The collection's index against exact search, with stored vectors as queries.

    The exact side needs every vector: read from the embeddings dataset when it holds exactly the collection's rows
    (`data`, or the one `index` keeps beside the database: fast), else pulled out of Milvus (slow for big collections).
    """
    from imgsearch.layout import embeddings_dir_for
    from imgsearch.store import CollectionRows, open_store

    started = time.perf_counter()
    with open_store(db, settings) as store:
        info = store.collection_for(model, collection)
        rows = CollectionRows(store, info, ["id"], data or embeddings_dir_for(db, info.model, settings))
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(rows), size=min(queries, len(rows)), replace=False))
        ids: list[str] = []
        qx = np.empty((len(pick), info.dim), np.float32)
        for cols, x in rows:  # pass 1: every id, and the query rows' vectors
            take_rows(qx, pick, len(ids), x)
            ids += cols["id"]
        hits = store.search(info, qx, k, consistency="Strong")
        exact = top_k_streamed(qx, rows.vectors(), k)  # pass 2: exact search, a batch at a time
    ann_ids = [[h.id for h in row] for row in hits]
    exact_ids = [[ids[j] for j in row] for row in exact]
    metrics = {f"recall@{k}": overlap_recall(ann_ids, exact_ids, k)}
    details = {"collection": info.name, "index": info.index_type, "index_params": info.index_params,
               "search_params": store.search_params(info, k), "vectors": len(ids), "queries": len(pick),
               "source": rows.source}
    return EvalReport("ann-vs-exact", metrics, details, time.perf_counter() - started)
