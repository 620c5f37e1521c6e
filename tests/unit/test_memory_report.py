"""The suite's memory report: a test above the budget, in the test process or in a child it starts, fails the run and
is named; under the budget the run passes and the report still prints."""

import os

import pytest

from helpers import REPO
from imgsearch import procmem
from memory_report import BUDGET_ENV, auto_workers

TESTS = """
import subprocess, sys
import numpy as np

def test_small():
    assert np.ones(10).sum() == 10

def test_big_in_process():
    x = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    assert x.sum() == x.size

def test_big_in_a_child():
    code = "import numpy as np, time; x = np.ones(300 * 2**20 // 8); time.sleep(1.5)"
    subprocess.run([sys.executable, "-c", code], check=True)
"""


def _run(pytester, monkeypatch, budget_mb: int, *args: str):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(BUDGET_ENV, str(budget_mb))
    pytester.makepyfile(test_alloc=TESTS)
    return pytester.runpytest_subprocess("-p", "memory_report", *args)


def test_tests_over_the_budget_fail_the_run_and_are_named(pytester, monkeypatch):
    res = _run(pytester, monkeypatch, 250)
    res.assert_outcomes(passed=3)
    assert res.ret == 1
    out = res.stdout.str()
    over = out.split("OVER BUDGET:", 1)[1].splitlines()[0]
    assert "test_big_in_process" in over and "test_big_in_a_child" in over and "test_small" not in over


def test_under_the_budget_the_run_passes_with_the_report(pytester, monkeypatch):
    res = _run(pytester, monkeypatch, 4000)
    res.assert_outcomes(passed=3)
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*peak memory per test*", "*memory: 3 tests, run peak * MiB*within budget*"])


def test_under_xdist_the_workers_figures_reach_the_report(pytester, monkeypatch):
    """`make test` runs on xdist workers: each measures its own tests, the controller reports them all and fails."""
    res = _run(pytester, monkeypatch, 250, "-n", "2")
    res.assert_outcomes(passed=3)
    assert res.ret == 1
    out = res.stdout.str()
    over = out.split("OVER BUDGET:", 1)[1].splitlines()[0]
    assert "test_big_in_process" in over and "test_big_in_a_child" in over and "test_small" not in over
    res.stdout.fnmatch_lines(["*memory: 3 tests, run peak*", "*memory: 2 xdist workers*together peaked at * MiB*"])


def test_auto_workers_are_cores_within_the_memory_the_budgets_take():
    gib = 1024
    assert auto_workers(8000, cores=2, total_mb=24 * gib) == 2  # the CI machine: 2 x 8 GB in 24 GiB
    assert auto_workers(8000, cores=16, total_mb=24 * gib) == 2  # memory decides
    assert auto_workers(8000, cores=16, total_mb=16 * gib) == 1  # one budget fits: serial
    assert auto_workers(8000, cores=16, total_mb=4 * gib) == 1  # never fewer than one
    assert auto_workers(4000, cores=3, total_mb=128 * gib) == 3  # cores decide


def test_a_large_embed_call_runs_in_bounded_forward_passes(tiny_model):
    """Embedder.embed on many crops (the tests and the evaluation call it so) runs at most MAX_FORWARD_BATCH crops per
    forward pass on the CPU, so its activations stay those of one batch; the vectors are the same as one by one."""
    import numpy as np

    from imgsearch.models import create_model
    from imgsearch.models.registry import MAX_FORWARD_BATCH

    emb = create_model(tiny_model, device="cpu", runtime="torch")
    seen = []
    features = emb.session.features
    emb.session.features = lambda px: (seen.append(len(px)), features(px))[1]
    crops = np.random.default_rng(0).integers(0, 256, (2 * MAX_FORWARD_BATCH + 5, 32, 32, 3), dtype=np.uint8)
    vectors = emb.embed(crops)
    assert seen == [MAX_FORWARD_BATCH, MAX_FORWARD_BATCH, 5]
    last = range(len(crops) - 3, len(crops))  # across the last chunk boundary
    np.testing.assert_allclose(vectors[-3:], np.concatenate([emb.embed(crops[i:i + 1]) for i in last]), atol=1e-6)


def test_a_high_water_mark_that_does_not_reset_is_detected(monkeypatch):
    """Where the kernel takes the reset and ignores it, own figures would be the worker's whole life: detected."""
    if procmem.peak_mb() is None:
        pytest.skip("no /proc high-water mark here (not Linux)")
    assert procmem.peak_reset_works()  # this machine's kernel resets it
    monkeypatch.setattr(procmem, "reset_peak", lambda: True)  # accepted, ignored
    assert not procmem.peak_reset_works()
