"""Render bench/results.json as the Markdown table the README shows: python -m bench table."""

from __future__ import annotations

import json

from bench.common import RESULTS


def when(sec: dict) -> str:
    """Date, commit and the CPU kind a section ran on (sections written before kinds were recorded ran on a CPU with
    native bf16: their `auto` precision was bf16)."""
    kind = sec["cpu"]["kind"] if isinstance(sec.get("cpu"), dict) and "kind" in sec["cpu"] else "avx512-bf16"
    return sec["date"][:10] + (f", commit {sec['git']}" if sec.get("git") else "") + f", CPU {kind}"


def search_load_rows(sec: dict) -> list[str]:
    rows = []
    ratios = sec.get("throughput_vs_plain_search", {})
    for p in sec["phases"]:
        if p["mode"] == "closed":
            load = f"closed loop, {p['clients']} clients"
        else:
            load = f"open loop, {p['target_qps']:g}/s offered, ≤{p['max_in_flight']} in flight"
        kind = p.get("kind", "search")
        what = (f"{kind} (upload → top-{sec['k']})" if kind.startswith("search") else f"{kind} (pages of 60)") \
            + f" over {sec['index_vectors']:,} × {sec['dim']}"
        ratio = f"{ratios[kind]:.2f}" if p["mode"] == "closed" and p["clients"] == 16 and kind in ratios else "–"
        rows.append(f"| {what} | {load} | {p['requests']:,} | {p['errors']} | {p['qps']:.1f} | {ratio} | "
                    f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} |")
    return rows


def quality_rows(sec: dict) -> list[str]:
    """The neighbour-quality table: a selection of configurations, mAP (P@1) per labelled set, img/s."""
    sets = list(sec["sets"])
    out = [f"Neighbour quality on labelled sets, leave-one-out ({when(sec)}): "
           + ", ".join(f"{n} ({v['images']:,} images, {v['classes']} classes)" for n, v in sec["sets"].items())
           + ". mAP (P@1); img/s is the model's forward rate on this machine (flip TTA: half).", "",
           "| configuration | " + " | ".join(sets) + " | img/s | mAP up on every set |",
           "|---|" + "---|" * len(sets) + "---|---|"]
    wanted = [("efficientnet_lite0", "avg", False, p) for p in ("none", "alpha-QE", "centred", "centred + alpha-QE",
                                                                 "PCA-256", "PCA-256 + alpha-QE", "PCA-256 whitened")]
    wanted += [("efficientnet_lite0", "gem", False, "none"), ("efficientnet_lite0", "avg", True, "none"),
               ("efficientnet_lite1", "avg", False, "none"), ("efficientnet_lite2", "avg", False, "none"),
               ("efficientnet_lite1", "avg", False, "alpha-QE"), ("efficientnet_lite2", "avg", False, "alpha-QE")]
    best = max(sec["rows"], key=lambda r: sum(r["mAP_gain"].values()))
    rows = {(r["model"], r["pooling"], r["flip_tta"], r["post"]): r for r in sec["rows"]}
    picked = [rows[w] for w in wanted if w in rows] + ([best] if best not in [rows.get(w) for w in wanted] else [])
    for r in picked:
        name = f"{r['model'].replace('efficientnet_', '')}, {r['pooling']}" + (", flip TTA" if r["flip_tta"] else "") \
            + ("" if r["post"] == "none" else f", {r['post']}")
        if (r["model"], r["pooling"], r["flip_tta"], r["post"]) == ("efficientnet_lite0", "avg", False, "none"):
            name += " (the default before)"
        if (r["model"], r["pooling"], r["flip_tta"], r["post"]) == ("efficientnet_lite0", "avg", False, "alpha-QE"):
            name = f"**{name} (the default now)**"
        if r is best:
            name += " (best measured)"
        cells = " | ".join(f"{r['sets'][s]['mAP']:.3f} ({r['sets'][s]['P@1']:.2f})" for s in sets)
        out.append(f"| {name} | {cells} | {r['img_per_s']} | {'yes' if r['raises_every_set'] else 'no'} |")
    return out + [""]


def duplicates_rows(sec: dict) -> list[str]:
    """Near-duplicates: verified groups against the cosine-only groups, on the look-alike set's test half."""
    edits = sec["edits"]["easy"] + sec["edits"]["hard"]
    out = [f"Near-duplicates on look-alike series with seeded edited copies ({when(sec)}): {sec['images']:,} images, "
           f"{sec['originals']:,} originals; scored on the half of the originals the thresholds were not chosen on. "
           "Precision and recall are pairwise; easy = the edits a person calls the same photo "
           f"({', '.join(sec['edits']['easy'])}); per edit: the copy grouped with its original. Series left out of "
           f"the rows (their truth is doubtful, see below): {', '.join(sec.get('ambiguous_series', [])) or 'none'}.",
           "",
           "| groups | precision | recall, easy edits | largest group (true) | " + " | ".join(edits) + " | seconds |",
           "|---|---|---|---|" + "---|" * len(edits) + "---|"]
    for key, name in (("verified", "**verified (default)**"), ("cosine_0_70", "cosine ≥ 0.70, union-find (before)")):
        r = sec[key]
        cells = " | ".join(f"{r['recall_per_edit'].get(e, float('nan')):.2f}" for e in edits)
        out.append(f"| {name} | {r['precision']:.3f} ({r['predicted_pairs']:,} pairs) | {r['easy_recall']:.3f} | "
                   f"{r['largest_group']} ({r['largest_true_group']}) | {cells} | {r['seconds']:.0f} |")
    v = sec["verified"]
    out += ["", f"Verified: {v['candidates']:,} candidate pairs, {v['verifications']:,} verifications at "
                f"{v['verify_ms_per_pair']} ms each. Goal: precision ≥ 0.98, easy recall ≥ 0.95, no group larger "
                "than the largest true group."]
    if "all_series" in v:
        a, t = v["all_series"], v["tune_split"]
        wrong = ", ".join(f"{k} {r['wrong']} of {r['pairs']}" for k, r in v["per_series"].items() if r["wrong"])
        out += ["", f"With every series: precision {a['precision']:.3f} ({a['predicted_pairs']:,} pairs), easy recall "
                    f"{a['easy_recall']:.3f}, largest group {a['largest_group']}. Wrong pairs by series: {wrong or 'none'}. "
                    f"On the tune half: precision {t['precision']:.3f}, easy recall {t['easy_recall']:.3f}, largest "
                    f"group {t['largest_group']} ({t['largest_true_group']})."]
    return out + [""]


def cpu_rows(sec: dict) -> list[str]:
    out = [f"Speed per CPU kind, runtime and precision ({when(sec)}; {sec['model']}). Forward: batches of 32, every "
           "core; end-to-end: the local engine over web-size JPEGs; query: one image, one thread. Quality against "
           "torch fp32 on real images (sample photos, their edited copies, tuxpaint stamps).", "",
           "| CPU kind | path | forward img/s | × torch fp32 | end-to-end img/s | end-to-end / forward | decode bound | "
           "query ms | cosine mean / min | near-dup R@1 | top-1 = fp32 | stamps mAP |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, k in sec["kinds"].items():
        for path, r in k["paths"].items():
            chosen = " (auto)" if path == k["auto"] else ""
            out.append(f"| {kind} | {path}{chosen} | {r['forward_img_per_s']:.1f} | {r['forward_over_torch_fp32']:.2f} | "
                       f"{r['e2e_img_per_s']:.1f} | {r['e2e_over_forward_ratio']:.2f} | {r['decode_bound_ratio']:.2f} | "
                       f"{r['query_ms_one_thread']:.1f} | {r['cosine_vs_torch_fp32_mean']:.4f} / "
                       f"{r['cosine_vs_torch_fp32_min']:.4f} | "
                       f"{r['near_dup_recall@1']:.3f} | {r['top1_same_as_torch_fp32']:.3f} | "
                       f"{r.get('stamps_mAP', float('nan')):.3f} |")
    out.append("")
    for kind, k in sec["kinds"].items():
        builds = k.get("int8_builds") or {}
        if builds:
            parts = [("post-training only" if name == "post_training" else f"tuned {b['recipe']['steps']} steps")
                     + f": cosine mean {b['cosine_mean']:.4f} (5th pct {b['cosine_p5']:.4f}), {b['build_s']:.0f} s"
                     for name, b in builds.items()]
            b = next(iter(builds.values()))
            out.append(f"int8 builds ({kind}, {b['recipe']['weight_bits']}-bit weights, on {b['images']} openclipart "
                       f"drawings and wallpapers, cosine on {b['holdout']} of them held out): " + "; ".join(parts) + ".")
    out.append("")
    return out


def models_rows(sec: dict) -> list[str]:
    """Model loads: memory and speed, eager vs traced, per CPU kind and precision; which precisions are traced."""
    out = [f"Model loads, eager vs TorchScript-traced ({when(sec)}; each configuration alone in a fresh process; "
           "load = `create_model` peak RSS over the imports; bound = 3 × fp32 weights + one batch of activations; "
           "img/s = best of 3 windows, batch 32, 8 for ViTs). A precision is traced where the traced load is within "
           f"the bound and ≥ {sec['keeps_min']} × eager on every CPU kind, and ≥ {sec['pays_min']} × on one.", "",
           "| model | CPU kind | path | fp32 weights MB | eager img/s | traced img/s | traced / eager | eager load MB | "
           "traced load MB | bound MB | traced? |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in sec["models"].items():
        traced_in = set(m["registry_trace"])
        for kind, paths in m["kinds"].items():
            for path, r in paths.items():
                if "eager" not in r:  # the ONNX export path: one load
                    load = f"{r.get('load_over_base_mb', '–')}{'' if r.get('within_bound') else ' (over)'}"
                    out.append(f"| {name} | {kind} | {path} (first export) | – | {r.get('img_per_s', '–')} | – | – | "
                               f"{load} | – | {r.get('bound_mb', '–')} | – |")
                    continue
                e, t = r["eager"], r["traced"]
                t_load = t.get("load_over_base_mb", f"killed > {t.get('killed_above_mb')}")
                ratio = f"{r['traced_over_eager']:.2f}" if r["traced_over_eager"] else "–"
                over = "" if t.get("within_bound") else " (over)"
                out.append(f"| {name} | {kind} | {path} | {e['weights_fp32_mb']} | {e['img_per_s']:.1f} | "
                           f"{t.get('img_per_s', 0):.1f} | {ratio} | {e['load_over_base_mb']} | {t_load}{over} | "
                           f"{t['bound_mb'] if 'bound_mb' in t else '–'} | "
                           f"{'**yes**' if path.split()[1] in traced_in else 'no'} |")
    disagree = [n for n, m in sec["models"].items() if not m["registry_agrees"]]
    out += ["", "The registry's `trace` agrees with these figures for every model." if not disagree else
            f"The registry's `trace` differs from these figures for: {', '.join(disagree)}.", ""]
    return out


def scale_rows(sec: dict) -> list[str]:
    out: list[str] = []
    c = sec.get("corpus_part")
    if c:
        comp = c["corpus"]["total"]
        srcs = ", ".join(f"{k} {v['images']:,}" for k, v in c["corpus"]["sources"].items())
        out += [f"Scale, real corpus ({when(sec)}): {comp['images']:,} images, {comp['mib']:,.0f} MiB ({srcs}); "
                f"model-only forward rate in the same run {c['forward_img_per_s']} img/s.", "",
                "| run | images | wall s | img/s | / forward | peak RSS MiB (all processes) | disk KiB/image | failed |",
                "|---|---|---|---|---|---|---|---|"]
        for key in ("local", "spark"):
            r = c.get(key)
            if r:
                name = "local engine" if key == "local" else f"Spark {r['master']} (after the 1% change)"
                ratio = r["img_per_s"] / c["forward_img_per_s"]
                out.append(f"| {name} | {r['images']:,} | {r['wall_s']:.0f} | {r['img_per_s']:.1f} | {ratio:.2f} | "
                           f"{r['peak_rss_mib_all_processes']:,} | {r['disk_kib_per_image']:.1f} | {r['failed']} |")
        r = c.get("rerun_1pct")
        if r:
            out.append(f"| rerun after {r['changed']} changed + {r['deleted']} deleted (`--sync`) | | {r['wall_s']:.1f} "
                       f"| | | {r['peak_rss_mib_all_processes']:,} | | ({r['share_of_first_run']:.1%} of the first run) |")
        fl = c.get("rss_flatness")
        if fl:
            out += ["", f"Peak RSS of `imgsearch index` (driver process) against collection size, one run: "
                    f"{fl['subset']['images']:,} images (every 8th file) {fl['subset']['peak_rss_mib_driver']:,} MiB, "
                    f"all {fl['full']['images']:,} images {fl['full']['peak_rss_mib_driver']:,} MiB "
                    f"(× {fl['full_over_subset']} for × {fl['full']['images'] / fl['subset']['images']:.0f} images)."]
        sv = c.get("serve")
        if sv:
            one, many = sv["one_client"], sv["16_clients"]
            out += ["", f"Search over HTTP (upload → top-10) on this index: one client p50 {one['p50_ms']:.0f} ms, "
                    f"p99 {one['p99_ms']:.0f} ms; 16 clients {many['qps']:.1f} q/s, p50 {many['p50_ms']:.0f} ms, "
                    f"p99 {many['p99_ms']:.0f} ms; service start-up {sv['startup_s']} s."]
        out.append("")
    m = sec.get("million_part")
    if m:
        out += [f"Scale, {m['vectors']:,} SYNTHETIC vectors ({m['synthetic']}: mean cosine to its real vector "
                f"{m['cosine_to_its_real_vector_mean']}), reduced to 256 dims in {m['reduce_s']} s{_reduce_note(m)}. Single "
                "queries in-process; QPS with 16 concurrent clients; recall@10 against exact search in the stored "
                "dims on 200 queries.", "",
                "| store | index | search | load vectors/s | p50 ms | p99 ms | QPS (16) | recall@10 |",
                "|---|---|---|---|---|---|---|---|"]
        lite_x = f"Milvus Lite, {m['lite_exact']['dim']}-d" if "lite_exact" in m else ""
        for key, label in (("lite_pca256", "Milvus Lite, 256-d"), ("lite_exact", lite_x),
                           ("server_hnsw_pca256", "milvus-server, 256-d")):
            st = m.get(key)
            for r in (st or {}).get("search", []):
                params = " ".join(f"{k}={v}" for k, v in r["search_params"].items()) or "exact"
                out.append(f"| {label} | {r['index']} {r['index_params'] or ''} | {params} | "
                           f"{st['load_vectors_per_s']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                           f"{r['qps_16_clients']:.0f} | {r['recall_at_10']:.3f} |")
        for key, label in (("lite_pca256", "Milvus Lite"), ("lite_exact", "Milvus Lite"),
                           ("server_hnsw_pca256", "milvus-server")):
            st = m.get(key)
            if st:
                built = (f", index built {st['index_build_after_load_s']:.0f} s after the load"
                         if st.get("index_build_after_load_s") else "")
                how = f" by {st['load_method']}" if st.get("load_method") else ""
                ins = st.get("insert_load")
                vs = (f" (through the API instead, {ins['vectors']:,} of them: {ins['load_vectors_per_s']:,} vectors/s; "
                      f"bulk import × {st['bulk_over_insert_rate']} in the same run)" if ins else "")
                out.append(f"{label} load of {st['vectors']:,} × {st['dim']}{how}: {st['load_s']:.0f} s "
                           f"({st['load_vectors_per_s']:,} vectors/s){vs}{built}; peak RSS "
                           f"{st['peak_rss_mib_this_process_and_children']:,} MiB (client + embedded server), "
                           f"{st['disk_mib']:,.0f} MiB on disk.")
        d = m.get("duplicates_1280")
        if d:
            out += ["", f"`duplicates` (ANN) over the {m['vectors']:,} × 1280 vectors: {d['wall_s']:.0f} s, "
                    f"{d['links']:,} links, recall {d['recall']} of the exact links of {d['recall_sample_rows']} random "
                    f"vectors ({d['cells']} cells, nprobe {d['nprobe']}"
                    f"{', chosen for recall ≥ 0.99 on that sample' if 'auto' in d.get('nprobe_chosen', '') else ''}"
                    f"{', %s pairs scored' % format(d['compared_pairs'], ',') if 'compared_pairs' in d else ''})."]
        out.append("")
    return out


def _reduce_note(m: dict) -> str:
    """How much the PCA itself loses: recall@10 of the reduced vectors against exact search at full width."""
    r256, rx = m.get("reduce_recall_at_10", {}), m.get("lite_exact", {})
    note = f" (recall@10 against full-width exact search {r256['recall_at_10']})" if "recall_at_10" in r256 else ""
    if "reduce_recall_at_10" in rx:
        note += (f" and to {rx['dim']} dims in {rx['reduce_s']} s (recall@10 against full-width exact search "
                 f"{rx['reduce_recall_at_10']['recall_at_10']})")
    return note


def render() -> str:
    data = json.loads(RESULTS.read_text())
    m = data["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib'] // 1024} GiB, torch {m['torch']}. Each "
           "section gives its date and the commit it measured.", ""]
    secs = data["sections"]
    if "indexing" in secs:
        sec = secs["indexing"]
        out += [f"Indexing speed, one process, model loaded ({when(sec)}). Forward = pre-decoded crops through the "
                "model, every core; end-to-end = list + read + decode + preprocess + embed + write Parquet. The decode "
                "bound is the highest ratio this machine allows: model core-ms / (model core-ms + decode core-ms).", "",
                "| model | precision | images | forward img/s | end-to-end img/s | end-to-end / forward | decode bound |",
                "|---|---|---|---|---|---|---|"]
        mix = f"{sec['images']:,} openclipart PNGs + camera JPEGs"
        rows = [(sec["model"], sec["precision"], mix, sec)]
        if "web" in sec:
            rows.append((sec["model"], sec["precision"], f"{sec['web']['images']:,} web-size JPEGs", sec["web"]))
        if "fp32" in sec:
            rows.append((sec["model"], "fp32", mix, sec["fp32"]))
        if "resnet50" in sec:
            rows.append(("resnet50", sec["resnet50"]["precision"], mix, sec["resnet50"]))
        for model, prec, data, r in rows:
            bound = f"{r['decode_bound_ratio']:.2f}" if "decode_bound_ratio" in r else "–"
            out.append(f"| {model} | {prec} | {data} | {r['forward_img_per_s']:.1f} | {r['e2e_img_per_s']:.1f} | "
                       f"**{r['e2e_over_forward_ratio']:.2f}** | {bound} |")
        out += ["", f"Goal: end-to-end ≥ {sec['goal_ratio_min']} × forward."]
        out.append("")
    if "search_latency" in secs:
        sec = secs["search_latency"]
        out += [f"Search latency, one query at a time: embed the uploaded JPEG + top-{sec['k']} search ({when(sec)}; "
                f"{sec['torch_threads']} torch thread, {sec['precision']}).", "",
                "| store | vectors | index | total p50 ms | total p99 ms | search p50 ms | search p99 ms | recall@10 vs exact |",
                "|---|---|---|---|---|---|---|---|"]
        for key, r in sec.items():
            if isinstance(r, dict) and "total" in r:
                store = "Milvus Lite" if key.startswith("lite") else "milvus-server"
                out.append(f"| {store} | {r['vectors']:,} | {r['index']} | {r['total']['p50_ms']:.1f} | "
                           f"{r['total']['p99_ms']:.1f} | {r['search']['p50_ms']:.1f} | {r['search']['p99_ms']:.1f} | "
                           f"{r.get('ann_recall_at_10', float('nan')):.3f} |")
        out.append("")
    if "eval" in secs:
        sec = secs["eval"]
        out += [f"Search quality, `imgsearch eval` ({when(sec)}):", "",
                "| evaluation | data | result |", "|---|---|---|"]
        for key, r in sec.items():
            if isinstance(r, dict) and "kind" in r:
                out.append(f"| {r['kind']} | {r.get('data', '')} | {r.get('summary', '')} |")
        out.append("")
    if "duplicates" in secs:
        out += duplicates_rows(secs["duplicates"])
    if "quality" in secs:
        out += quality_rows(secs["quality"])
    if "quality_reference" in secs:
        sec = secs["quality_reference"]
        sets = list(next(iter(sec["rows"].values())))
        out += [f"Learned on another collection ({when(sec)}): the mean and PCA of {sec['reference_images']:,} other "
                f"images ({sec['reference']}), applied to each labelled set ({sec['model']}, average pooling); "
                "mAP (P@1):", "", "| configuration | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        for name, got in sec["rows"].items():
            out.append(f"| {name} | " + " | ".join(f"{got[s]['mAP']:.3f} ({got[s]['P@1']:.2f})" for s in sets) + " |")
        out.append("")
    if "kill_resume" in secs:
        sec = secs["kill_resume"]
        out += [f"Crash safety ({when(sec)}): `imgsearch index` of {sec['images']} images SIGKILLed at random "
                "moments, then run to completion.", "",
                "| engine | kills | final index = clean run | duplicates | images re-embedded per kill |",
                "|---|---|---|---|---|"]
        for eng in ("local", "spark"):
            if eng in sec:
                r = sec[eng]
                dup = r["milvus_count"] - r["milvus_unique_ids"] + r["dataset_rows"] - r["dataset_unique_ids"]
                out.append(f"| {eng} | {r['kills']} | {'yes' if r['ids_equal_clean_run'] else 'NO'} | {dup} | "
                           f"{r['rows_redone_per_kill']} |")
        out.append("")
    if "search_load" in secs:
        sec = secs["search_load"]
        out += [f"Search service ({when(sec)}): `imgsearch serve` in its own process, load generator on loopback.",
                "",
                "| benchmark | load | requests | errors | QPS | QPS / plain search | p50 ms | p99 ms |",
                "|---|---|---|---|---|---|---|---|", *search_load_rows(sec), "",
                "Open loop: latency counts from each request's scheduled start, so an offered rate above what the "
                "machine serves (on this 2-core AVX2 CPU the model caps search near 50 QPS) shows as a growing "
                "queue. The ratio column compares each kind with plain search in the same run.", ""]
    if "spark_vs_local" in secs:
        sec = secs["spark_vs_local"]
        out += [f"Indexing wall time, `imgsearch embed` as a command, start-up included ({when(sec)}); real images: "
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
    if "cpu" in secs:
        out += cpu_rows(secs["cpu"])
    if "models" in secs:
        out += models_rows(secs["models"])
    if "pca" in secs:
        sec = secs["pca"]
        rec = sec["recall_at_10_vs_full"]
        out += [f"PCA ({when(sec)}): fit on {sec['fit_rows']:,} × {sec['dim']} vectors: "
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
    if "scale" in secs:
        out += scale_rows(secs["scale"])
    if "buckets" in secs:
        out += bucket_rows(secs["buckets"])
    return "\n".join(out)


def bucket_rows(sec: dict) -> list[str]:
    if "runs" not in sec:  # results of the first version: one shared-cores comparison
        return [f"Indexing from a bucket ({when(sec)}): `imgsearch embed` of {sec['images']} web-size JPEGs, local disk "
                f"{sec['local_img_per_s']} img/s, bucket {sec['bucket_img_per_s']} img/s "
                f"(**{sec['bucket_over_local_rate']:.2f} ×**), {sec['requests_per_image']} requests per image.", ""]
    out = [f"Indexing from a bucket ({when(sec)}): `imgsearch embed` of {sec['images']} web-size JPEGs from local disk "
           f"and from an S3 server on loopback ({sec['server']}), alternated, best of {sec['rounds']}:", "",
           "| cores | local disk img/s | bucket img/s | bucket / local | server CPU (share of machine) | "
           "imgsearch CPU per image: local disk / extra from the bucket | requests per image |",
           "|---|---|---|---|---|---|---|"]
    for mode, r in sec["runs"].items():
        cores = (f"imgsearch {r['imgsearch_cores']}, server {r['server_cores']} (pinned)" if mode == "pinned"
                 else f"all {r['imgsearch_cores']} shared with the server")
        out.append(f"| {cores} | {r['local_img_per_s']} | {r['bucket_img_per_s']} | "
                   f"**{r['bucket_over_local_rate']:.2f} ×** | {r['server_cpu_share_of_machine']:.0%} | "
                   f"{r.get('local_cpu_ms_per_image', '?')} ms / +{r.get('client_cpu_ms_per_image', '?')} ms | "
                   f"{r['requests_per_image']} ({', '.join(f'{k} {v}' for k, v in r['requests_one_run'].items())}) |")
    return out + [""]


def run(quick: bool = False) -> None:
    print(render())


def update_readme() -> None:
    """Replace the README's table (between the bench:start/end markers) with the current results."""
    readme = RESULTS.parents[1] / "README.md"
    text = readme.read_text()
    a, b = text.index("<!-- bench:start -->"), text.index("<!-- bench:end -->")
    readme.write_text(text[: a + len("<!-- bench:start -->")] + "\n" + render().rstrip() + "\n" + text[b:])
    print(f"updated {readme}")
