"""PCA dimension reduction: fit once on the collection's embeddings, apply the same transform to every query.

The fit accumulates n, the column sums and X^T X over batches (exact, memory O(dim^2) whatever the row count, and
the same sums whether one process or Spark tasks compute them), then takes the eigen-decomposition of the covariance.
The data is centred with the fitted mean before projecting (Spark ML's PCA does not centre in transform). Inputs wider
than MAX_COVARIANCE_DIM (flattened conv features) use scikit-learn's randomized PCA on the rows in memory instead.
Reduced vectors are re-normalised, so cosine/inner-product search stays meaningful.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from imgsearch.config import Settings
from imgsearch.errors import ImgSearchError, StoreError
from imgsearch.layout import REDUCER_SUBDIR, reducers_dir
from imgsearch.vectors import overlap_recall, top_k

MAX_COVARIANCE_DIM = 16_384
FORMAT_VERSION = 1


class ReduceError(ImgSearchError):
    """Bad target, too little data, or a reducer that does not match the vectors."""


@dataclass
class Moments:
    """Running n, column sums and Gram matrix X^T X (float64): the sufficient statistics of PCA."""

    n: int = 0
    total: np.ndarray | None = None
    gram: np.ndarray | None = None

    def add(self, x: np.ndarray) -> "Moments":
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            return self
        if self.total is None:
            self.total = np.zeros(x.shape[1])
            self.gram = np.zeros((x.shape[1], x.shape[1]))
        self.n += len(x)
        self.total += x.sum(axis=0)
        self.gram += x.T @ x
        return self

    def merge(self, other: "Moments") -> "Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        return Moments(self.n + other.n, self.total + other.total, self.gram + other.gram)


@dataclass
class Reducer:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal
    eigenvalues: np.ndarray  # (m,) variances along every computed direction, descending
    total_variance: float
    k: int
    whiten: bool
    model: str
    input_dim: int
    n_fit: int
    target: str  # "variance=0.95" or "dims=128"
    quality: dict = field(default_factory=dict)

    @property
    def variance_kept(self) -> float:
        return float(self.eigenvalues[: self.k].sum() / self.total_variance)

    @property
    def id(self) -> str:
        h = hashlib.blake2b(digest_size=6)
        for arr in (self.mean, self.components):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(f"{self.whiten}".encode())
        return h.hexdigest()

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Centre, project, optionally whiten, re-normalise: (N, D) -> (N, k) float32 unit rows."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ReduceError(f"reducer {self.id} takes {self.input_dim}-d vectors of {self.model}, got shape {x.shape}")
        y = (x.astype(np.float64) - self.mean) @ self.components.T
        if self.whiten:
            y /= np.sqrt(np.maximum(self.eigenvalues[: self.k], 1e-12))
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    # -- persistence: a JSON description + an .npz of the arrays, portable and bit-exact ----------------------------
    def save(self, folder: str | Path) -> Path:
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "reducer.npz", mean=self.mean, components=self.components, eigenvalues=self.eigenvalues)
        meta = {"format": FORMAT_VERSION, "id": self.id, "k": self.k, "whiten": self.whiten, "model": self.model,
                "input_dim": self.input_dim, "n_fit": self.n_fit, "target": self.target,
                "total_variance": self.total_variance, "variance_kept": self.variance_kept, "quality": self.quality}
        (d / "reducer.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, folder: str | Path) -> "Reducer":
        d = Path(folder)
        try:
            meta = json.loads((d / "reducer.json").read_text())
            with np.load(d / "reducer.npz") as arrays:
                mean, comps, eig = arrays["mean"], arrays["components"], arrays["eigenvalues"]
        except (OSError, ValueError, KeyError) as exc:
            raise ReduceError(f"cannot read a reducer in {d}: {exc}") from None
        red = cls(mean=mean, components=comps, eigenvalues=eig, total_variance=meta["total_variance"], k=meta["k"],
                  whiten=meta["whiten"], model=meta["model"], input_dim=meta["input_dim"], n_fit=meta["n_fit"],
                  target=meta["target"], quality=meta.get("quality", {}))
        if red.id != meta["id"]:
            raise ReduceError(f"reducer in {d} is damaged: its arrays do not match its id {meta['id']}")
        return red


def parse_target(text: str) -> tuple[float | None, int | None]:
    """'0.95' -> variance target; '128' -> dims."""
    try:
        value = float(text)
    except ValueError:
        raise ReduceError(f"reduction target {text!r}: give a variance fraction (0.95) or a number of dims (128)")
    if 0 < value < 1:
        return value, None
    if value >= 1 and value == int(value):
        return None, int(value)
    raise ReduceError(f"reduction target {text!r}: a fraction in (0, 1) or a whole number of dims")


def choose_k(eigenvalues: np.ndarray, total: float, variance: float | None, dims: int | None) -> int:
    """The smallest k whose components explain at least `variance` of the total, or `dims`."""
    if dims is not None:
        if dims > len(eigenvalues):
            raise ReduceError(f"cannot keep {dims} dims: only {len(eigenvalues)} components exist (dim or rows too few)")
        return dims
    cum = np.cumsum(eigenvalues) / total
    # a hair of tolerance: 0.95 must be reachable when exactly 95% is explained, whatever the float rounding
    hit = np.nonzero(cum >= variance - 1e-9)[0]
    if len(hit) == 0:
        raise ReduceError(f"the computed components explain only {cum[-1]:.4f} of the variance, below {variance}")
    return int(hit[0]) + 1


def fit_from_moments(m: Moments, model: str, variance: float | None = None, dims: int | None = None,
                     whiten: bool = False) -> Reducer:
    if m.n < 2:
        raise ReduceError(f"PCA needs at least 2 vectors, got {m.n}")
    mean = m.total / m.n
    cov = (m.gram - m.n * np.outer(mean, mean)) / (m.n - 1)
    eig, vec = np.linalg.eigh(cov)
    order = np.argsort(eig)[::-1]
    eig = np.clip(eig[order], 0.0, None)
    vec = vec[:, order]
    total = float(eig.sum())
    if total <= 0:
        raise ReduceError("the vectors have no variance to reduce")
    rank = min(m.n - 1, len(eig))
    k = choose_k(eig[:rank], total, variance, dims)
    comps = vec[:, :k].T.copy()
    # a deterministic sign per component (eigh's is arbitrary): largest-magnitude coordinate positive
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= signs[:, None]
    return Reducer(mean=mean, components=comps, eigenvalues=eig[:rank], total_variance=total, k=k, whiten=whiten,
                   model=model, input_dim=len(mean), n_fit=m.n, target=_target_text(variance, dims))


def fit_wide(x: np.ndarray, model: str, variance: float | None, dims: int | None, whiten: bool,
             seed: int = 0) -> Reducer:
    """Inputs wider than MAX_COVARIANCE_DIM: randomized PCA on the rows (held in memory) via scikit-learn."""
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise ReduceError(f"vectors of {x.shape[1]} dims need scikit-learn's randomized PCA: pip install scikit-learn")
    n_comp = min(len(x) - 1, x.shape[1], dims if dims is not None else 1024)
    pca = PCA(n_components=n_comp, svd_solver="randomized", random_state=seed).fit(x)
    total = float(x.astype(np.float64).var(axis=0, ddof=1).sum())
    eig = pca.explained_variance_.astype(np.float64)
    k = choose_k(eig, total, variance, dims)
    return Reducer(mean=pca.mean_.astype(np.float64), components=pca.components_[:k].astype(np.float64),
                   eigenvalues=eig, total_variance=total, k=k, whiten=whiten, model=model, input_dim=x.shape[1],
                   n_fit=len(x), target=_target_text(variance, dims))


def fit_batches(batches: Iterable[np.ndarray], model: str, variance: float | None = None, dims: int | None = None,
                whiten: bool = False) -> Reducer:
    """Fit from (N, D) batches streamed from the dataset (the local engine)."""
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ReduceError("no vectors to fit")
    if first.shape[1] > MAX_COVARIANCE_DIM:
        return fit_wide(np.concatenate([first, *it]), model, variance, dims, whiten)
    m = Moments().add(first)
    for b in it:
        m.add(b)
    return fit_from_moments(m, model, variance, dims, whiten)


def _target_text(variance: float | None, dims: int | None) -> str:
    return f"variance={variance}" if variance is not None else f"dims={dims}"


def recall_at_k(full: np.ndarray, reduced: np.ndarray, k: int = 10, queries: int = 1000, seed: int = 0) -> float:
    """Mean overlap of the top-k neighbours (self excluded) found in the reduced space with those of the full space."""
    n = len(full)
    if n <= k + 1:
        return float("nan")
    q = np.random.default_rng(seed).choice(n, size=min(queries, n), replace=False)
    exact = top_k(full[q], full, k, block=256, exclude=q, normalise=False)
    approx = top_k(reduced[q], reduced, k, block=256, exclude=q, normalise=False)
    return overlap_recall(approx, exact, k)


def reducer_for(db: str, info, settings: Settings) -> Reducer:
    """The PCA reducer a collection's vectors went through (`info`: a store CollectionInfo), from the reducers
    folder beside the database: every query of a reduced collection must go through it too."""
    folder = reducers_dir(db, settings) / str(info.reducer)
    if not (folder / "reducer.json").is_file():
        raise StoreError(f"collection {info.name} was reduced with PCA reducer {info.reducer}, which is not in "
                         f"{folder}: copy the {REDUCER_SUBDIR} folder of the reduced embeddings there")
    red = Reducer.load(folder)
    if red.model != info.model or red.k != info.dim or red.id != info.reducer:
        raise ReduceError(f"reducer in {folder} ({red.model}, {red.input_dim}->{red.k}) does not match collection "
                          f"{info.name} ({info.model}, {info.dim}-d)")
    return red


def plot(reducer: Reducer, path: str | Path) -> Path:
    """Cumulative explained variance with the chosen k marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cum = np.cumsum(reducer.eigenvalues) / reducer.total_variance
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(np.arange(1, len(cum) + 1), cum, color="#2d6cdf", lw=2, label="cumulative explained variance")
    ax.axvline(reducer.k, color="#b3261e", ls="--", lw=1.2)
    ax.axhline(reducer.variance_kept, color="#b3261e", ls=":", lw=1)
    ax.annotate(f"k = {reducer.k}: {reducer.variance_kept:.1%} kept", (reducer.k, reducer.variance_kept),
                textcoords="offset points", xytext=(8, -18), color="#b3261e")
    ax.set_xscale("log")
    ax.set_xlabel("number of components (log scale)")
    ax.set_ylabel("fraction of variance")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PCA of {reducer.n_fit:,} {reducer.model} vectors ({reducer.input_dim}-d)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def reduce_table(table, reducer: Reducer):
    """A dataset table (rows with vectors) with `vector` replaced by its reduced form and `dim` by k."""
    import pyarrow as pa

    from imgsearch.dataset import vectors_of

    n, k = table.num_rows, reducer.k
    reduced = reducer.transform(vectors_of(table)) if n else np.zeros((0, k), np.float32)
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    vec = pa.ListArray.from_arrays(offsets, pa.array(reduced.ravel(), type=pa.float32()))
    table = table.set_column(table.schema.get_field_index("vector"), pa.field("vector", pa.list_(pa.float32())), vec)
    return table.set_column(table.schema.get_field_index("dim"), pa.field("dim", pa.int32(), nullable=False),
                            pa.array(np.full(n, k, dtype=np.int32)))
