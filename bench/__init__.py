"""Benchmarks: `python -m bench all [--quick]` runs each and writes bench/results.json (figures, machine, date)."""
