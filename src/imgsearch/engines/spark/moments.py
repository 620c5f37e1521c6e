"""PCA's sufficient statistics computed by Spark tasks (one row of n, sum and X^T X per task), summed on the driver:
exact, and memory O(dim^2) whatever the row count."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from imgsearch.dataset import vectors_of
from imgsearch.reduce import Moments

from imgsearch.engines.spark.session import as_uri

_DDL = "n long, dim int, total binary, gram binary"


def _task_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: one row per task with n, column sums and X^T X of its vectors (float64 bytes)."""
    m = Moments()
    for b in batches:
        m.add(vectors_of(b))
    if m.n:
        yield pa.RecordBatch.from_arrays(
            [pa.array([m.n], pa.int64()), pa.array([len(m.total)], pa.int32()),
             pa.array([m.total.tobytes()], pa.binary()), pa.array([m.gram.tobytes()], pa.binary())],
            names=["n", "dim", "total", "gram"])


def fit_moments(spark, uri: str) -> Moments:
    df = spark.read.parquet(as_uri(uri)).filter("error IS NULL").select("vector")
    total = Moments()
    for row in df.mapInArrow(_task_moments, _DDL).toLocalIterator():
        d = row.dim
        total = total.merge(Moments(row.n, np.frombuffer(row.total, np.float64).copy(),
                                    np.frombuffer(row.gram, np.float64).reshape(d, d).copy()))
    return total
