"""The benchmarks run (quick sizes) and their results file has the figures; speed itself is not asserted here.
They share bench/results-quick.json: `make test` (`--dist loadfile`) runs a module's tests on one worker, in turn."""

import json
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow


def test_search_load_quick_runs_without_errors():
    res = subprocess.run([sys.executable, "-m", "bench", "search-load", "--quick"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    sec = json.loads((REPO / "bench" / "results-quick.json").read_text())["sections"]["search_load"]
    assert sec["quick"] is True and sec["total_errors"] == 0
    assert {p["mode"] for p in sec["phases"]} == {"closed", "open"}
    assert all(p["requests"] > 0 and p["p50_ms"] > 0 for p in sec["phases"])
    # one run compares plain search with the default, filtered search and browsing
    assert set(sec["throughput_vs_plain_search"]) == {"search, plain (no query expansion)",
                                                      "search (default: query expansion)", "search with filters",
                                                      "browse, newest first", "browse with filters"}


def test_quality_quick_measures_the_variants():
    sec = _quick("quality", "quality")
    assert set(sec["sets"]) == {"stamps", "openclipart", "wesnoth"}
    posts = {r["post"] for r in sec["rows"]}
    assert {"none", "alpha-QE", "centred", "PCA-256"} <= posts and {r["pooling"] for r in sec["rows"]} == {"avg", "gem"}
    base = next(r for r in sec["rows"] if r["post"] == "none" and r["pooling"] == "avg" and not r["flip_tta"])
    assert all(v == 0 for v in base["mAP_gain"].values()) and 0 < base["sets"]["stamps"]["mAP"] <= 1
    assert "default" in sec and set(sec["default"]["sets"]) == set(sec["sets"])


def test_buckets_quick_compares_disk_and_bucket_shared_and_pinned():
    from imgsearch.s3_standalone import executable

    if executable() is None:
        pytest.skip("moto[server] not installed (dev extra)")
    sec = _quick("buckets", "buckets")
    assert set(sec["runs"]) == {"shared", "pinned"}
    for r in sec["runs"].values():
        assert r["local_img_per_s"] > 0 and r["bucket_img_per_s"] > 0 and r["objects"] == sec["images"]
        assert r["requests_one_run"]["GET"] >= sec["images"] and r["requests_per_image"] >= 1
    assert sec["bucket_over_local_rate"] == sec["runs"]["pinned"]["bucket_over_local_rate"]


def _quick(name: str, section: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "bench", name, "--quick"], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    sec = json.loads((REPO / "bench" / "results-quick.json").read_text())["sections"][section]
    assert sec["quick"] is True
    return sec


def test_indexing_quick_records_forward_end_to_end_and_ratio():
    sec = _quick("indexing", "indexing")
    assert sec["images"] == 256 and sec["forward_img_per_s"] > 0 and sec["e2e_img_per_s"] > 0
    # the ratio is computed before the two rates are rounded to 0.1 img/s: recomputing it from them differs by < 0.002
    assert sec["e2e_over_forward_ratio"] == pytest.approx(sec["e2e_img_per_s"] / sec["forward_img_per_s"], abs=2e-3)


def test_search_latency_quick_measures_lite_and_server():
    sec = _quick("search-latency", "search_latency")
    runs = [v for v in sec.values() if isinstance(v, dict) and "total" in v]
    assert runs and all(r["vectors"] == 2000 and r["total"]["p50_ms"] > 0 for r in runs)
    assert all(0 < r["ann_recall_at_10"] <= 1 for r in runs)


def test_scale_quick_runs_every_stage():
    """`bench scale --quick`: a 160-image corpus from packages through both engines (and an eighth of it, for peak
    RSS against size), a 1% rerun, the HTTP service, then 5,000 synthetic vectors through reduce, Milvus Lite (both
    indexes), milvus-server and ANN duplicates."""
    res = subprocess.run([sys.executable, "-m", "bench", "scale", "--quick"], cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    sec = json.loads((REPO / "bench" / "results-quick.json").read_text())["sections"]["scale"]
    corpus, million = sec["corpus_part"], sec["million_part"]
    assert corpus["corpus"]["total"]["images"] >= 160
    assert 0 < corpus["rss_flatness"]["subset"]["images"] < corpus["rss_flatness"]["full"]["images"]
    assert corpus["rss_flatness"]["full_over_subset"] > 0
    for run in (corpus["local"], corpus["spark"]):
        assert run["embedded"] > 130 and run["img_per_s"] > 0 and run["disk_kib_per_image"] > 0
        assert run["peak_rss_mib_by_process_kind"]["driver"] > 0
    assert "python_worker" in corpus["spark"]["peak_rss_mib_by_process_kind"]
    assert corpus["rerun_1pct"]["deleted"] >= 1 and corpus["rerun_1pct"]["wall_s"] > 0
    assert corpus["serve"]["16_clients"]["requests"] > 0 and corpus["serve"]["16_clients"]["errors"] == 0
    assert million["vectors"] == 5_000 and million["lite_pca256"]["dim"] <= 256
    lite = million["lite_pca256"]["search"]
    assert {r["index"] for r in lite} == {"FLAT", "IVF_FLAT"}
    assert all(r["recall_at_10"] == 1.0 for r in lite if r["index"] == "FLAT")  # exact is exact
    exact = million["lite_exact"]  # PCA to fewer dims: within Lite's exact range, so auto chose FLAT
    assert exact["dim"] <= 96 and [r["index"] for r in exact["search"]] == ["FLAT"]
    assert exact["search"][0]["recall_at_10"] == 1.0 and 0 < exact["reduce_recall_at_10"]["recall_at_10"] <= 1
    if "server_hnsw_pca256" in million:
        assert all(r["index"] == "HNSW" and r["recall_at_10"] > 0.5 for r in million["server_hnsw_pca256"]["search"])
    assert million["duplicates_1280"]["recall"] is not None and million["duplicates_1280"]["links"] > 0


def test_duplicates_quick_scores_verified_and_cosine_groups():
    sec = _quick("duplicates", "duplicates")
    for method in ("verified", "cosine_0_70"):
        r = sec[method]
        assert 0 <= r["precision"] <= 1 and 0 <= r["easy_recall"] <= 1 and r["true_pairs"] > 0
        assert set(r["recall_per_edit"]) <= set(sec["edits"]["easy"]) | set(sec["edits"]["hard"])
        assert r["largest_true_group"] >= 2
    assert sec["verified"]["verifications"] > 0 and sec["verified"]["verify_ms_per_pair"] > 0
