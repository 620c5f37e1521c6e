"""Kill -9 at random moments, rerun to completion: the index must equal a clean run's, and little work is redone.

Each cycle starts `imgsearch index` in its own process group, SIGKILLs the whole group (CLI, Milvus Lite, Spark JVM
and workers) after a random delay, and counts the rows the dataset holds. Every engine appends "batch <pid> <n>" to
the work log after each model batch, so the images embedded by runs that were then killed are counted: work redone =
all rows embedded by all runs - rows in the final dataset.

Usage: python -m bench kill-resume [--quick]  (the test suite runs a short version with a fixed seed)
"""

from __future__ import annotations

from pathlib import Path

from imgsearch.testing import kill_cycles


def run(quick: bool = False) -> dict:
    """The benchmark: more kills than the test, on the local engine (and on Spark in full mode)."""
    import tempfile

    from bench.common import log, save
    from imgsearch import samples

    results = {}
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-kill-") as tmp:
        src = Path(tmp) / "images"
        samples.write_sample_photos(src)
        samples.write_lfw_faces(src / "faces")
        env = {"IMGSEARCH_BATCH_SIZE": "8", "IMGSEARCH_ROWS_PER_PART": "16", "IMGSEARCH_PART_SECONDS": "0.5"}
        plans = [("local", 3 if quick else 20, (0.2, 3.0))] + ([] if quick else [("spark", 5, (1.0, 12.0))])
        for engine, kills, startup in plans:
            extra = ["--partitions", "8"] if engine == "spark" else []
            r = kill_cycles(src, Path(tmp) / engine, total=221, kills=kills, seed=7, startup=startup, engine=engine,
                            extra=extra, env=env)
            r.pop("final_stderr"), r.pop("clean_stderr")
            log(f"kill-resume {engine}: {r['kills']} kills, ids equal clean run: {r.get('ids_equal_clean_run')}, "
                f"rows redone per kill: {r.get('rows_redone_per_kill')}")
            results[engine] = r
    figures = {"images": 221, "rows_per_part": 16, "part_seconds": 0.5, "batch_size": 8, **results}
    save("kill_resume", figures, quick)
    return figures
