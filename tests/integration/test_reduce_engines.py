"""PCA through the engines: the distributed fit refuses inputs too wide for its covariance; the local one switches
to randomized PCA."""

import numpy as np
import pytest

from helpers import settings
from imgsearch.reduce import MAX_COVARIANCE_DIM, ReduceError


def test_spark_engine_refuses_too_wide_vectors_clearly(tmp_path):
    from datetime import datetime, timezone

    from imgsearch import dataset as dset
    from imgsearch import pipeline

    d = MAX_COVARIANCE_DIM + 1
    cols = dset.empty_columns()
    for i in range(3):
        for name, val in (("id", f"{i:032x}"), ("path", f"file:///x/{i}.jpg"), ("model", "wide"), ("dim", d),
                          ("width", 1), ("height", 1), ("bytes", 1), ("mtime", datetime.now(timezone.utc)),
                          ("format", "PNG"), ("error", None)):
            cols[name].append(val)
    rng = np.random.default_rng(0)
    dset.write_part(dset.to_table(cols, list(rng.standard_normal((3, d)).astype(np.float32))), tmp_path / "wide")
    with pytest.raises(ReduceError, match="too wide for the distributed covariance fit.*--engine local"):
        pipeline.reduce(str(tmp_path / "wide"), str(tmp_path / "out"), settings(), dims=2, engine="spark")
    rep = pipeline.reduce(str(tmp_path / "wide"), str(tmp_path / "out"), settings(), dims=2, engine="local")
    assert rep.reducer.k == 2 and rep.rows == 3
