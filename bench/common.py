"""Results file, machine description and small statistics shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results.json"
CACHE = Path(tempfile.gettempdir()) / "imgsearch-bench-data"  # data sets built from packages, reused by every run


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    from imgsearch.procmem import total_mb

    mem = round(total_mb() or 0)

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "git": git_rev()}


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def save(section: str, figures: dict, quick: bool) -> Path:
    """Merge one benchmark's figures into results.json (quick runs go to results-quick.json)."""
    path = RESULTS.with_name("results-quick.json") if quick else RESULTS
    data = json.loads(path.read_text()) if path.exists() else {}
    data["machine"] = machine()
    from imgsearch.models import cpu_features

    cpu = cpu_features()  # each section records the CPU kind it ran on: sections may come from different machines
    data.setdefault("sections", {})[section] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                                "git": git_rev(), "quick": quick,
                                                "cpu": {"kind": cpu.kind, "flags": sorted(cpu.flags),
                                                        "emulated": cpu.emulated}, **figures}
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def percentiles(latencies_s: list[float]) -> dict:
    a = np.asarray(latencies_s) * 1000
    if a.size == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
