"""python -m bench {all,cpu,models,duplicates,scale,buckets,quality,quality-reference,indexing,search-latency,search-load,spark-vs-local,pca,kill-resume,eval,table,readme} [--quick]"""

from __future__ import annotations

import argparse

from bench import buckets, cpu, duplicates
from bench import eval as eval_bench
from bench import indexing, kill_resume, models, pca, quality, scale, search_latency, search_load, spark_vs_local, table

BENCHMARKS = {"indexing": indexing.run, "search-latency": search_latency.run, "search-load": search_load.run,
              "spark-vs-local": spark_vs_local.run, "pca": pca.run, "eval": eval_bench.run,
              "kill-resume": kill_resume.run, "cpu": cpu.run, "models": models.run, "scale": scale.run,
              "buckets": buckets.run, "duplicates": duplicates.run, "quality": quality.run, "quality-reference": quality.run_reference}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("which", choices=["all", *BENCHMARKS, "table", "readme"], help="benchmark to run, or 'table' to print results")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run (asserts nothing about speed)")
    args = ap.parse_args()
    if args.which == "table":
        table.run()
        return
    if args.which == "readme":
        table.update_readme()
        return
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    for name in names:
        BENCHMARKS[name](quick=args.quick)


if __name__ == "__main__":
    main()
