"""The benchmarks run (quick sizes) and their results file has the figures; speed itself is not asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_search_load_quick_runs_without_errors():
    res = subprocess.run([sys.executable, "-m", "bench", "search-load", "--quick"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    sec = json.loads((REPO / "bench" / "results-quick.json").read_text())["sections"]["search_load"]
    assert sec["quick"] is True and sec["total_errors"] == 0
    assert {p["mode"] for p in sec["phases"]} == {"closed", "open"}
    assert all(p["requests"] > 0 and p["p50_ms"] > 0 for p in sec["phases"])
