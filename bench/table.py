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
    if "spark_vs_local" in secs:
        sec = secs["spark_vs_local"]
        out += [f"Indexing wall time, `imgsearch embed` as a command, start-up included ({sec['date'][:10]}); real images: "
                "openclipart PNGs + camera-size JPEGs (`bench/datasets.py`).", "",
                "| images | local engine s | Spark `local[2]` s | Spark / local | local img/s | Spark img/s |",
                "|---|---|---|---|---|---|"]
        for r in sec["runs"]:
            out.append(f"| {r['images']:,} | {r['local_s']:.1f} | {r['spark_local2_s']:.1f} | "
                       f"{r['spark_over_local_ratio']:.2f} | {r['local_img_per_s']:.1f} | {r['spark_img_per_s']:.1f} |")
        model = sec["runs"][0].get("model")
        if model:
            out += ["", f"Fitted from the two sizes (wall = fixed + n / rate): local engine {model['local']['fixed_s']:.1f} s "
                    f"fixed + {model['local']['img_per_s']:.0f} img/s; Spark local[2] {model['spark_local2']['fixed_s']:.1f} s "
                    f"fixed + {model['spark_local2']['img_per_s']:.0f} img/s."]
        out.append("")
    if "pca" in secs:
        sec = secs["pca"]
        rec = sec["recall_at_10_vs_full"]
        out += [f"PCA ({sec['date'][:10]}): fit on {sec['fit_rows']:,} × {sec['dim']} vectors: "
                f"{sec['fit_in_memory_s']:.1f} s (in memory), {sec['reduce_command_s']:.1f} s as `imgsearch reduce` over "
                "a Parquet dataset (fit + recall report + writing the reduced vectors). Recall@10 of search in the "
                f"reduced space vs the full 1280-d space, {sec['real_vectors']:,} real image embeddings:", "",
                "| dims | variance kept | recall@10 | recall@10 whitened |", "|---|---|---|---|"]
        for key, val in rec.items():
            if key.endswith("_whitened"):
                continue
            w = rec.get(f"{key}_whitened")
            label = key.replace("variance_0.95_k", "k = ") + (" (95% variance)" if key.startswith("variance") else "")
            out.append(f"| {label} | {val['variance_kept']:.3f} | {val['recall_at_10']:.3f} | "
                       f"{w['recall_at_10']:.3f} |" if w else f"| {label} | {val['variance_kept']:.3f} | "
                       f"{val['recall_at_10']:.3f} | – |")
        out.append("")
    return "\n".join(out)


def run(quick: bool = False) -> None:
    print(render())


def update_readme() -> None:
    """Replace the README's table (between the bench:start/end markers) with the current results."""
    readme = RESULTS.parents[1] / "README.md"
    text = readme.read_text()
    a, b = text.index("<!-- bench:start -->"), text.index("<!-- bench:end -->")
    readme.write_text(text[: a + len("<!-- bench:start -->")] + "\n" + render().rstrip() + "\n" + text[b:])
    print(f"updated {readme}")
