"""Render bench/results.json as the Markdown table the README shows: python -m bench table."""

from __future__ import annotations

import json

from bench.common import RESULTS


def search_load_rows(sec: dict) -> list[str]:
    rows = []
    for p in sec["phases"]:
        if p["mode"] == "closed":
            load = f"closed loop, {p['clients']} clients"
        else:
            load = f"open loop, {p['target_qps']:g}/s offered, ≤{p['max_in_flight']} in flight"
        rows.append(f"| search (upload → top-{sec['k']}) over {sec['index_vectors']:,} × {sec['dim']} | {load} | "
                    f"{p['requests']:,} | {p['errors']} | {p['qps']:.1f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |")
    return rows


def render() -> str:
    data = json.loads(RESULTS.read_text())
    m = data["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib'] // 1024} GiB, torch {m['torch']} "
           f"(commit {m['git']}).", ""]
    secs = data["sections"]
    if "search_load" in secs:
        sec = secs["search_load"]
        out += [f"Search service ({sec['date'][:10]}): `imgsearch serve` in its own process, load generator on loopback.",
                "",
                "| benchmark | load | requests | errors | QPS | p50 ms | p99 ms |",
                "|---|---|---|---|---|---|---|", *search_load_rows(sec), ""]
    return "\n".join(out)


def run(quick: bool = False) -> None:
    print(render())
