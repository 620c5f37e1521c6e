"""Per-test peak memory of the test process and its children, reported at the end of the run, with a budget the run
fails on (`IMGSEARCH_TEST_MEMORY_BUDGET_MB`, default 8000: a third of a 24 GiB machine).

Each test's peak is the larger of
* the test process's own high-water mark (VmHWM, reset before the test: exact, includes the module fixtures set up
  or torn down within it), and
* the memory of the whole process tree (servers, Spark's JVM and workers, CLI subprocesses, the browser) as PSS
  (a page shared by several processes counted once in all), sampled every SAMPLE_S by a thread.
Loaded through `pytest_plugins` in tests/conftest.py; `-p no:memory_report` turns it off. With
`IMGSEARCH_TEST_MEMORY_REPORT=FILE` every test's figures (with its RSS at start) are written there as JSON.

Under pytest-xdist (`make test` runs `-n auto`) the budget holds per worker: each worker measures its own tests as
above and hands its figures to the controller when it ends; `-n auto` starts at most as many workers as the machine
has cores and as budgets fit in 90% of its memory (`auto_workers`), so workers x budget never exceeds the machine.
The controller samples its whole tree too (every worker and its children together) and reports that peak.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest

from imgsearch import procmem

SAMPLE_S = 0.25
BUDGET_ENV = "IMGSEARCH_TEST_MEMORY_BUDGET_MB"
REPORT_ENV = "IMGSEARCH_TEST_MEMORY_REPORT"
DEFAULT_BUDGET_MB = 8000
SHOWN = 12
MEMORY_SHARE = 0.9  # of the machine's memory that workers x budget may take


def auto_workers(budget_mb: float, cores: int | None = None, total_mb: float | None = None) -> int:
    """How many xdist workers `-n auto` starts: one per core, no more than budgets fit in MEMORY_SHARE of memory."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    total_mb = total_mb if total_mb is not None else procmem.total_mb()
    by_memory = math.floor(total_mb * MEMORY_SHARE / budget_mb) if total_mb else 1
    return max(1, min(cores, by_memory))


class TreeSampler(threading.Thread):
    """The largest PSS of this process and its descendants since the last `restart`."""

    def __init__(self):
        super().__init__(name="memory-report", daemon=True)
        self.peak = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        now = procmem.tree_pss_mb(os.getpid())
        with self._lock:
            self.peak = max(self.peak, now)

    def restart(self) -> None:
        with self._lock:
            self.peak = 0.0
        self.sample()

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


class MemoryReport:
    def __init__(self, budget_mb: float):
        self.budget_mb = budget_mb
        self.peaks: dict[str, tuple[float, float]] = {}  # nodeid -> (own high-water mark, process tree)
        self.at_start: dict[str, float] = {}  # nodeid -> own RSS when the test started
        self.seconds: dict[str, float] = {}  # nodeid -> wall time of setup, call and teardown
        self.worker: dict[str, str] = {}  # nodeid -> xdist worker that ran it (controller only)
        self.sampler = TreeSampler()
        self.exact = procmem.peak_reset_works()  # else own figures are cumulative: the budget is judged on the tree

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.at_start[item.nodeid] = procmem.rss_mb() or 0.0
        procmem.reset_peak()
        self.sampler.restart()
        t0 = time.monotonic()
        yield
        self.seconds[item.nodeid] = time.monotonic() - t0
        self.sampler.sample()
        self.peaks[item.nodeid] = (procmem.peak_mb() or 0.0, self.sampler.peak)

    def judged(self, peaks: tuple[float, float]) -> float:
        """The figure a test is judged on: the larger of own and tree, or the tree alone where own is cumulative."""
        return max(peaks) if self.exact else peaks[1]

    def over_budget(self) -> list[tuple[str, float]]:
        return [(n, self.judged(p)) for n, p in self.peaks.items() if self.judged(p) > self.budget_mb]

    def pytest_sessionstart(self, session):
        self.sampler.start()

    def rows(self) -> list[dict]:
        return [{"test": n, "own_at_start_mb": round(self.at_start.get(n, 0)), "own_peak_mb": round(own),
                 "tree_peak_mb": round(tree), "seconds": round(self.seconds.get(n, 0), 2),
                 **({"worker": self.worker[n]} if n in self.worker else {})}
                for n, (own, tree) in self.peaks.items()]

    def pytest_testnodedown(self, node, error):
        """xdist controller: a worker ended; take its figures."""
        out = getattr(node, "workeroutput", {})
        self.exact = self.exact and out.get("memory_report_exact", True)
        for r in out.get("memory_report", []):
            self.peaks[r["test"]] = (r["own_peak_mb"], r["tree_peak_mb"])
            self.at_start[r["test"]] = r["own_at_start_mb"]
            self.seconds[r["test"]] = r["seconds"]
            self.worker[r["test"]] = node.gateway.id

    def pytest_sessionfinish(self, session, exitstatus):
        self.sampler.stop()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports
            workeroutput["memory_report"] = self.rows()
            workeroutput["memory_report_exact"] = self.exact
            return
        if os.environ.get(REPORT_ENV):
            with open(os.environ[REPORT_ENV], "w") as fh:
                json.dump({"budget_mb": self.budget_mb, "run_tree_peak_mb": round(self.sampler.peak),
                           "own_exact": self.exact, "tests": self.rows()}, fh, indent=1)
        if self.over_budget() and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.peaks:
            return
        tr = terminalreporter
        tr.section("peak memory per test (MiB: own high-water mark / process tree, sampled / own RSS at start)")
        ranked = sorted(self.peaks.items(), key=lambda kv: -self.judged(kv[1]))
        for nodeid, (own, tree) in ranked[:SHOWN]:  # at start: what the worker held before the test began
            tr.write_line(f"{self.judged((own, tree)):8.0f}  own {own:7.0f}  tree {tree:7.0f}  at start "
                          f"{self.at_start.get(nodeid, 0):6.0f}  {self.worker.get(nodeid, '')}  {nodeid}")
        top_id, top = ranked[0][0], self.judged(ranked[0][1])
        over = self.over_budget()
        verdict = "within budget" if not over else f"{len(over)} test(s) OVER BUDGET: " + ", ".join(n for n, _ in over)
        exact = "" if self.exact else (" (the own high-water mark does not reset here: own figures are cumulative, "
                                       "tests are judged on the process tree)")
        tr.write_line(f"memory: {len(self.peaks)} tests, run peak {top:.0f} MiB ({top_id}), budget "
                      f"{self.budget_mb:.0f} MiB ({BUDGET_ENV}): {verdict}{exact}")
        if self.worker:
            tr.write_line(f"memory: {len(set(self.worker.values()))} xdist workers, budget per worker; all of them "
                          f"together peaked at {self.sampler.peak:.0f} MiB (process tree, sampled)")


def _budget_mb() -> float:
    return float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_MB))


def pytest_configure(config):
    config.pluginmanager.register(MemoryReport(_budget_mb()), "memory-report-instance")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return auto_workers(_budget_mb())
