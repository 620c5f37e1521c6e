"""Fixtures shared by every tier: real photos from installed packages, a loaded default model, a CLI runner.

Tests are laid out like the architecture: `unit/` (no servers, no real model: a tiny registered one), `integration/`
(Milvus Lite, Spark local, the real models), `e2e/` (the CLI in real processes, the browser, kill -9, a real Milvus
server). Each test gets its tier's marker from its folder, so `pytest -m unit` runs the fast tier.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _share_cores_between_workers() -> None:
    """Under pytest-xdist each worker, and what it starts, gets its share of the cores for torch's (OpenMP) threads:
    two workers each running as many threads as the machine has cores oversubscribe it, and spinning OpenMP threads
    then burn system time (measured on 2 cores: 994 s of system time beside 1,113 s of user time in one suite run).
    Set before torch is imported; a variable already set wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for var in ("OMP_NUM_THREADS", "IMGSEARCH_TORCH_THREADS"):
            os.environ.setdefault(var, share)


_share_cores_between_workers()

sys.path.insert(0, str(Path(__file__).parent))  # `import helpers` from every tier

import helpers  # noqa: E402
from imgsearch import samples  # noqa: E402

pytest_plugins = ["memory_report", "pytester"]  # per-test peak memory and its budget; pytester tests the report
TIERS = ("unit", "integration", "e2e")


def pytest_report_header(config):
    """The machine the figures below come from (CI logs are read without it otherwise)."""
    from imgsearch import procmem
    from imgsearch.models.cpu import cpu_features

    cpu = cpu_features()
    return (f"machine: {cpu.model}, {cpu.cores} usable cores, {(procmem.total_mb() or 0) / 1024:.1f} GiB, "
            f"CPU kind {cpu.kind} ({' '.join(sorted(cpu.flags))}){' emulated' if cpu.emulated else ''}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


RELEASE_AFTER_MB = 256  # a test that leaves the worker this much bigger gives its freed pages back at once


@pytest.fixture(autouse=True)
def release_memory_of_a_big_test():
    """A test that loaded models in this process (a CLIP tower is 0.6-1.2 GB) leaves freed pages that the allocator
    tuning keeps: without this the next test of its module started 5 GB up (seen: the ViT-B/32 load test after the
    ViT-B/16 one). Only after tests that grew the process, so the cost (a garbage collection) is rarely paid."""
    from imgsearch import procmem

    before = procmem.rss_mb() or 0.0
    yield
    if (procmem.rss_mb() or 0.0) - before > RELEASE_AFTER_MB:
        _give_memory_back()


@pytest.fixture(scope="module", autouse=True)
def release_memory():
    """When a module's tests end, its models, servers' clients and arrays are freed (module fixtures are torn down
    before this), and the heap's free pages go back to the system: the allocator tuning that makes inference fast
    (imgsearch.models.registry.tune_allocator) otherwise keeps them, and the next module would start from there."""
    yield
    _give_memory_back()


def _give_memory_back() -> None:
    """Free what nothing refers to any more, then hand the heap's free pages back to the system."""
    import gc

    from imgsearch.models.registry import return_free_pages

    gc.collect()
    return_free_pages()


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory) -> Path:
    """The ~21 real sample photos (scikit-image + scikit-learn), copied into a session temp folder."""
    d = tmp_path_factory.mktemp("photos")
    samples.write_sample_photos(d)
    return d


@pytest.fixture(scope="session")
def photo_paths(photos_dir) -> list[Path]:
    return sorted(photos_dir.iterdir())


@pytest.fixture(scope="session")
def lite0():
    from imgsearch.models import create_model

    return create_model("efficientnet_lite0", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return helpers.register_tiny_model()


@pytest.fixture
def cli():
    return helpers.run_cli


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory):
    """name -> a random-weights file of that registered CLIP model (made on first use, once per session), made in a
    child process: building ViT-B/16 takes a few GB that the worker would keep for the rest of the run."""
    import subprocess

    folder = tmp_path_factory.mktemp("clip-weights")
    made: dict[str, Path] = {}

    def make(name: str = "mobileclip2_s0") -> Path:
        if name in made:
            return made[name]
        code = ("import sys; from imgsearch.models.random_weights import random_weights_file; "
                "print(random_weights_file(sys.argv[1], sys.argv[2]))")
        res = subprocess.run([sys.executable, "-c", code, name, str(folder)], capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        made[name] = Path(res.stdout.strip().splitlines()[-1])
        return made[name]

    return make
