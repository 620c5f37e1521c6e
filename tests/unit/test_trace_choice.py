"""Which precisions a model is traced in: the rule `bench models` applies to measured figures (injected here), and the
registry agreeing with the figures recorded in bench/results.json."""

import json

import pytest

from bench.models import precisions_that_pay, verdict
from helpers import REPO
from imgsearch.models import get_spec


def row(img_per_s, load_mb, weights_mb=100, first_batch_mb=50):
    return {"img_per_s": img_per_s, "load_over_base_mb": load_mb, "peak_over_base_mb": load_mb + first_batch_mb,
            "weights_fp32_mb": weights_mb, "first_batch_mb": first_batch_mb}


def kinds(**pairs):
    """pairs: 'kind__precision' -> (eager row, traced row)."""
    out: dict[str, dict] = {}
    for key, (e, t) in pairs.items():
        kind, precision = key.split("__")
        out.setdefault(kind, {})[f"torch {precision}"] = verdict(e, t)
    return out


def test_traced_where_faster_on_one_kind_and_not_slower_on_any():
    k = kinds(avx512__fp32=(row(100, 100), row(120, 150)), avx2__fp32=(row(50, 100), row(49, 150)))
    assert precisions_that_pay(k) == ["fp32"]


def test_not_traced_where_it_is_no_faster_or_slower_somewhere():
    assert precisions_that_pay(kinds(avx512__fp32=(row(100, 100), row(103, 100)))) == []
    assert precisions_that_pay(kinds(avx512__fp32=(row(100, 100), row(130, 100)),
                                     avx2__fp32=(row(50, 100), row(45, 100)))) == []


def test_not_traced_where_the_traced_load_passes_the_memory_bound():
    # bound: 3 x 100 MB weights + 50 MB of activations = 350 MB over the imports
    assert precisions_that_pay(kinds(avx512__bf16=(row(100, 100), row(150, 351)))) == []
    assert precisions_that_pay(kinds(avx512__bf16=(row(100, 100), row(150, 350)))) == ["bf16"]
    killed = verdict(row(100, 100), {"killed_above_mb": 12000})
    assert precisions_that_pay({"avx512": {"torch bf16": killed}}) == []


def test_each_precision_decided_on_its_own():
    k = kinds(avx512__fp32=(row(100, 100), row(125, 120)), avx512__bf16=(row(100, 100), row(100, 2000)))
    assert precisions_that_pay(k) == ["fp32"]


def test_the_registry_traces_what_the_recorded_figures_say():
    sec = json.loads((REPO / "bench" / "results.json").read_text())["sections"].get("models")
    if sec is None:
        pytest.skip("no `bench models` figures recorded")
    for name, m in sec["models"].items():
        assert precisions_that_pay(m["kinds"]) == m["trace_pays"], name  # the file is the rule's output
        assert sorted(get_spec(name).trace) == m["trace_pays"], f"{name}: rerun python -m bench models, or set " \
                                                                f"trace={tuple(m['trace_pays'])}"
