"""Command line: thin wrappers over imgsearch.pipeline. User errors -> one line on stderr and exit code 1.

The settings are built once, here (IMGSEARCH_* variables), and passed down to every use case."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from imgsearch.config import get_settings
from imgsearch.errors import ImgSearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Index a collection of images and find visually similar ones.")

_S = get_settings()
DbOpt = typer.Option(_S.db, "--db", help="Milvus URI: a .db file (Milvus Lite) or http://host:19530 (env IMGSEARCH_DB)")
ModelOpt = typer.Option(_S.model, "--model", "-m", help="embedding model (see 'imgsearch models')")
WeightsOpt = typer.Option(None, "--weights", help="weights file for the model (e.g. a resnet50 state dict)")
BatchOpt = typer.Option(None, "--batch-size", help="images per forward pass (default from settings: 32)")
WorkersOpt = typer.Option(None, "--workers", help="decode threads (default: CPU cores)")
EngineOpt = typer.Option("local", "--engine", "-e", help="local (this machine) or spark (see 'imgsearch engines')")
MasterOpt = typer.Option(None, "--master", help="Spark master: local[*] (default), local-cluster[N,C,MB], spark://host:7077, "
                         "yarn, k8s://https://host:443; under spark-submit, spark-submit's")
PartitionsOpt = typer.Option(None, "--partitions", help="Spark: repartition the files into N tasks")
ConfOpt = typer.Option(None, "--conf", help="Spark configuration k=v (repeatable)")


def _engine_options(master, partitions, conf):
    from imgsearch.engines import EngineOptions

    pairs = {}
    for item in conf or []:
        if "=" not in item:
            raise ImgSearchError(f"--conf takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        pairs[k.strip()] = v.strip()
    return EngineOptions(master=master, partitions=partitions, conf=pairs)


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


SyncOpt = typer.Option(False, "--sync", help="also forget files that are gone from SRC")
RetryOpt = typer.Option(False, "--retry-failed", help="try failed files again even if they did not change")


def _report_embed(rep, quiet: bool = False) -> None:
    if quiet:
        return
    todo = rep.new + rep.changed + rep.retried
    plan = (f"{rep.new} new, {rep.changed} changed, {rep.unchanged} unchanged"
            + (f", {rep.retried} failed retried" if rep.retried else "")
            + (f", {rep.failed_unchanged} failed before and unchanged (not retried; --retry-failed)"
               if rep.failed_unchanged else "")
            + (f", {rep.removed} removed" if rep.removed else ""))
    typer.echo(f"{plan} files", err=True)
    if rep.stale_removed:
        typer.echo(f"{rep.stale_removed} files are gone from the source but still indexed (--sync forgets them)",
                   err=True)
    if todo == 0 and not rep.failed:
        typer.echo("nothing to embed: every file is up to date", err=True)
        return
    rate = f", {rep.images_per_second:.1f} img/s" if rep.seconds else ""
    if rep.cpu_seconds and rep.embedded + rep.failed:  # what sizing a machine needs: CPU time per image
        rate += f", {rep.cpu_seconds / (rep.embedded + rep.failed) * 1000:.1f} ms CPU per image"
    typer.echo(f"embedded {rep.embedded} images with {rep.model} ({rep.dim}-d) in {rep.seconds:.1f}s{rate}", err=True)
    if rep.skipped_non_images:
        typer.echo(f"skipped {rep.skipped_non_images} files that are not images by name or content", err=True)
    if rep.failed:
        typer.echo(f"warning: {rep.failed} files failed and were recorded with their reason:", err=True)
        for uri, reason in rep.failures[:20]:
            typer.echo(f"  {uri}: {reason}", err=True)
        if rep.failed > 20:
            typer.echo(f"  ... and {rep.failed - 20} more ('imgsearch failures' lists them all)", err=True)


@app.command()
def embed(src: str = typer.Argument(..., help="folder or image file"),
          out: str = typer.Option(..., "--out", "-o",
                                  help="folder or bucket prefix (s3://, gs://, az://) for the Parquet dataset"),
          model: str = ModelOpt, weights: Optional[str] = WeightsOpt,
          overwrite: bool = typer.Option(False, "--overwrite", help="start from empty: drop the embeddings in --out"),
          sync: bool = SyncOpt, retry_failed: bool = RetryOpt,
          batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt, engine: str = EngineOpt,
          master: Optional[str] = MasterOpt, partitions: Optional[int] = PartitionsOpt,
          conf: Optional[list[str]] = ConfOpt) -> None:
    """Compute embeddings of the images under SRC (a folder, or with --engine spark any Hadoop URI) into Parquet.

    Run it again to embed only new and changed files; a killed run is finished by running it again."""
    from imgsearch import pipeline

    rep = pipeline.embed(src, out, model, _S, weights=weights, overwrite=overwrite, sync=sync,
                         retry_failed=retry_failed, batch_size=batch_size, workers=workers, engine=engine,
                         options=_engine_options(master, partitions, conf))
    _report_embed(rep)
    typer.echo(f"wrote {rep.embedded + rep.failed} rows to {out}")


@app.command()
def load(data_dir: str = typer.Argument(..., help="Parquet dataset written by 'embed' (a folder or Hadoop URI)"),
         db: str = DbOpt, engine: str = EngineOpt, master: Optional[str] = MasterOpt) -> None:
    """Load embeddings from a Parquet dataset into Milvus (upsert by id: loading twice adds nothing)."""
    from imgsearch import pipeline

    rep = pipeline.load(data_dir, db, _S, engine=engine, options=_engine_options(master, None, None))
    for name, n in rep.written.items():
        typer.echo(f"loaded {n} vectors into {name} ({rep.counts[name]} in total) at {db}")
    if rep.failed_rows > 0:
        typer.echo(f"{rep.failed_rows} rows of failed files were not loaded", err=True)


@app.command()
def index(src: str = typer.Argument(..., help="folder or image file"), db: str = DbOpt, model: str = ModelOpt,
          weights: Optional[str] = WeightsOpt,
          out: Optional[str] = typer.Option(None, "--out", "-o", help="keep the Parquet embeddings in this folder or "
                                            "bucket prefix (s3://, gs://, az://)"),
          batch_size: Optional[int] = BatchOpt, workers: Optional[int] = WorkersOpt, engine: str = EngineOpt,
          master: Optional[str] = MasterOpt, partitions: Optional[int] = PartitionsOpt,
          conf: Optional[list[str]] = ConfOpt,
          reduce_to: Optional[str] = typer.Option(None, "--reduce", help="reduce with PCA: a variance fraction "
                                                  "(0.95) or a number of dims (128)"),
          whiten: bool = typer.Option(False, "--whiten", help="with --reduce: whiten the components"),
          sync: bool = SyncOpt, retry_failed: bool = RetryOpt,
          overwrite: bool = typer.Option(False, "--overwrite", help="re-embed everything and rewrite every vector")) -> None:
    """Embed the new and changed images under SRC (optionally reduce with PCA) and bring Milvus up to date.

    Safe to run again at any time and after any crash: it finishes what is missing and never duplicates."""
    from imgsearch import pipeline

    rep = pipeline.index(src, db, model, _S, weights=weights, out=out, batch_size=batch_size, workers=workers,
                         engine=engine, options=_engine_options(master, partitions, conf), reduce_target=reduce_to,
                         whiten=whiten, sync=sync, retry_failed=retry_failed, overwrite=overwrite)
    _report_embed(rep.embed)
    if rep.reduce is not None:
        _report_reduce(rep.reduce)
    for name, n in rep.load.written.items():
        deleted = f", removed {rep.load.deleted}" if rep.load.deleted else ""
        typer.echo(f"indexed {n} images into {name}{deleted}; the collection holds {rep.load.counts[name]} at {db}")


def _report_reduce(rep) -> None:
    r = rep.reducer
    typer.echo(f"PCA ({r.target}{', whitened' if r.whiten else ''}): {r.input_dim} -> {r.k} dims, "
               f"{r.variance_kept:.1%} of the variance kept, recall@10 vs full dims "
               f"{r.quality.get('recall_at_10', float('nan')):.3f} on {r.quality.get('sample', 0):,} vectors; "
               f"reducer {r.id} in {Path(rep.plot).parent} (plot: {Path(rep.plot).name})", err=True)


@app.command()
def reduce(data_dir: str = typer.Argument(..., help="Parquet embeddings written by 'embed'"),
           out: str = typer.Option(..., "--out", "-o", help="folder for the reduced embeddings (+ _reducer/)"),
           variance: Optional[float] = typer.Option(None, "--variance", help="keep this fraction of the variance"),
           dims: Optional[int] = typer.Option(None, "--dims", help="keep this many dims"),
           whiten: bool = typer.Option(False, "--whiten", help="divide each component by its standard deviation"),
           engine: str = typer.Option("local", "--engine", "-e", help="fit locally or with Spark"),
           master: Optional[str] = MasterOpt,
           overwrite: bool = typer.Option(False, "--overwrite", help="replace embeddings already in --out")) -> None:
    """Fit PCA on embeddings, write the reduced embeddings and the reducer (used for queries automatically)."""
    from imgsearch import pipeline

    if (variance is None) == (dims is None):
        raise ImgSearchError("give exactly one of --variance 0.95 or --dims K")
    if variance is not None and not 0 < variance < 1:
        raise ImgSearchError("--variance is a fraction between 0 and 1, e.g. 0.95")
    if dims is not None and dims < 1:
        raise ImgSearchError("--dims must be at least 1")
    rep = pipeline.reduce(data_dir, out, _S, variance=variance, dims=dims, whiten=whiten, engine=engine,
                          options=_engine_options(master, None, None), overwrite=overwrite)
    _report_reduce(rep)
    typer.echo(f"wrote {rep.rows} reduced vectors to {out} in {rep.seconds:.1f}s")


@app.command()
def search(image: Optional[str] = typer.Argument(None, help="query image file (or use --text / --tag)"),
           db: str = DbOpt,
           k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="number of results"),
           text: Optional[str] = typer.Option(None, "--text", "-t",
                                              help="search by words (collections of image-text models: CLIP)"),
           tag: list[str] = typer.Option([], "--tag", help="keyword: images auto-tagged with it (repeat for any of "
                                         "several); with an image or --text, a filter on their results"),
           model: Optional[str] = typer.Option(None, "--model", "-m",
                                               help="model of the collection to search (needed only if several)"),
           weights: Optional[str] = WeightsOpt,
           collection: Optional[str] = typer.Option(None, "--collection", help="collection to search, if several"),
           expand: bool = typer.Option(True, "--expand/--no-expand", help="query expansion (default on: "
                                       "IMGSEARCH_QUERY_EXPANSION neighbours); --no-expand: plain nearest neighbours"),
           folder: Optional[str] = typer.Option(None, "--folder", help="only images under this folder"),
           date_from: Optional[str] = typer.Option(None, "--from", help="only files modified on/after YYYY-MM-DD"),
           date_to: Optional[str] = typer.Option(None, "--to", help="only files modified on/before YYYY-MM-DD"),
           min_width: Optional[int] = typer.Option(None, "--min-width", help="only images at least this wide"),
           min_height: Optional[int] = typer.Option(None, "--min-height", help="only images at least this high"),
           fmt: list[str] = typer.Option([], "--format", help="only these formats (JPEG, PNG, ...)"),
           as_json: bool = typer.Option(False, "--json", help="print a JSON list")) -> None:
    """Find the K indexed images most similar to IMAGE, or matching --text, or tagged --tag."""
    from imgsearch import pipeline
    from imgsearch.filters import FilterError
    from imgsearch.filters import parse as parse_filters
    from imgsearch.sources import display_name

    try:
        flt = parse_filters(folder=folder, date_from=date_from, date_to=date_to, min_width=min_width,
                            min_height=min_height, formats=fmt)
    except FilterError as exc:
        raise ImgSearchError(str(exc)) from None
    settings = _S if expand else _S.model_copy(update={"query_expansion": 0})
    res = pipeline.search(image, db, k, settings, model=model, weights=weights, collection=collection, text=text,
                          tags=tag or None, filters=None if flt.empty else flt)
    if as_json:
        typer.echo(json.dumps([{"rank": i + 1, "id": h.id, "path": h.path, "score": round(h.score, 6),
                                "tags": list(h.tags), **({"same_picture": res.copies[h.id]} if h.id in res.copies
                                                         else {})} for i, h in enumerate(res.hits)], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    what = f"'{text}'" if text else (image or f"tag {' / '.join(tag)}")
    table = Table(title=f"top {k} for {what} in {res.collection.name} ({res.collection.count} images, "
                        f"{res.collection.model})")
    for col in ("#", "score", "name", "copy?", "tags", "path"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(res.hits):
        copy = res.copies.get(h.id)
        same = "" if copy is None else "same picture" + (": " + ", ".join(copy["edits"]) if copy["edits"] else "")
        table.add_row(str(i + 1), f"{h.score:.4f}", display_name(h.path), same, ", ".join(h.tags[:3]), h.path)
    Console(width=max(120, Console().width)).print(table)
    if not res.hits:
        typer.echo("no results")
    elif res.copies:
        n = len(res.copies)
        typer.echo(f"the collection holds {'a copy' if n == 1 else f'{n} copies'} of this picture (verified from "
                   "the pixels: 'copy?' column)")


@app.command()
def stats(db: str = DbOpt, as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Count of indexed images, their model and dim."""
    from imgsearch import pipeline

    st = pipeline.stats(db, _S)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"{db}: {st['count']} images")
    for c in st["collections"]:
        red = f", PCA reducer {c['reducer']}" if c.get("reducer") else ""
        params = "".join(f" {k}={v}" for k, v in (c.get("index_params") or {}).items())
        typer.echo(f"  {c['name']}: {c['count']} vectors, model {c['model']}, {c['dim']}-d, index {c['index_type']}"
                   f"{params}{red}")


@app.command()
def failures(db: str = DbOpt, data: Optional[str] = typer.Option(None, "--data", help="an embeddings folder instead "
                                                                   "of the database's own"),
             model: Optional[str] = typer.Option(None, "--model", "-m", help="only this model's files"),
             as_json: bool = typer.Option(False, "--json", help="print a JSON list")) -> None:
    """List the files that could not be indexed, with the reason for each."""
    from imgsearch import pipeline
    from imgsearch.sources import uri_to_path

    rows = pipeline.failures(db, _S, data=data, model=model)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        where = r["path"]
        if where.startswith("file:"):
            where = os.fsencode(uri_to_path(where)).decode("utf-8", "backslashreplace")
        typer.echo(f"{where}\t{r['error']}")
    typer.echo(f"{len(rows)} failed files", err=True)


@app.command()
def duplicates(db: str = DbOpt,
               threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="cosine similarity floor: "
                                                         "verified (default), the candidates' (default 0.5); with "
                                                         "--no-verify, what makes two images near-duplicates (0.70)"),
               verify: bool = typer.Option(True, "--verify/--no-verify", help="decide from the pixels whether two "
                                           "look-alikes are the same picture (default); --no-verify: cosine only"),
               model: Optional[str] = typer.Option(None, "--model", "-m", help="model of the collection, if several"),
               collection: Optional[str] = typer.Option(None, "--collection", help="collection, if several"),
               method: str = typer.Option("auto", "--method", help="exact (every pair), ann (IVF index, recall "
                                          "measured on a sample) or auto (exact up to 100k vectors)"),
               as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Groups of copies of the same picture: identical files, and copies resized, re-encoded, cropped, framed or
    captioned (verified from the pixels against the group's largest image); the one to keep is marked."""
    from imgsearch import pipeline
    from imgsearch.sources import display_name

    res = pipeline.duplicates(db, _S, threshold=threshold, model=model, collection=collection, method=method,
                              verify=verify)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    for n, g in enumerate(res["groups"], 1):
        if verify:
            typer.echo(f"group {n}: {g['size']} images, {'identical files' if g['kind'] == 'identical' else 'the same picture'}")
        else:
            typer.echo(f"group {n}: {g['size']} images, weakest link {g['min_similarity']:.3f}")
        for im in g["images"]:
            mark = "keep " if verify and im["path"] == g["keep"] else "     "
            what = ""
            if verify and im.get("relation") == "identical":
                what = "  identical"
            elif verify and im.get("relation") == "copy":
                what = "  copy: " + (", ".join(im["evidence"]["edits"]) or "re-encoded")
            typer.echo(f"  {mark}{im['width']}x{im['height']}  {display_name(im['path'])}  {im['path']}{what}")
    dup = sum(g["size"] - 1 for g in res["groups"])
    if verify:
        typer.echo(f"{len(res['groups'])} groups among {res['images']} images in {res['collection']}: {dup} images are "
                   f"copies of another; {res['candidates']} candidate pairs (cosine >= {res['candidate_floor']}), "
                   f"{res['verifications']} verified ({res['verify_ms_per_pair']:.1f} ms each), "
                   f"{res['seconds']:.1f} s in all", err=True)
        for sk in res["skipped"]:
            typer.echo(f"skipped {sk['path']}: {sk['reason']}", err=True)
    else:
        typer.echo(f"{len(res['groups'])} groups of near-duplicates among {res['images']} images in "
                   f"{res['collection']} (threshold {res['threshold']}); {dup} images are copies of another; "
                   f"{res['method']} search in {res['seconds']:.1f} s", err=True)
    if res["method"] == "ann" and res["search"].get("recall") is not None:
        st = res["search"]
        typer.echo(f"ANN recall {st['recall']:.4f} of the exact links of {st['recall_sample_rows']} random images "
                   f"({st['recall_sample_links']} links), probing {st['nprobe']} of {st['cells']} cells "
                   f"({st['nprobe_chosen']}); --method exact to compare every pair", err=True)


eval_app = typer.Typer(no_args_is_help=True, help="Measure search quality on your own images (table or JSON).")
app.add_typer(eval_app, name="eval")
JsonOpt = typer.Option(False, "--json", help="print JSON instead of a table")
SaveOpt = typer.Option(None, "--save", help="also write the JSON report to this file")


def _print_eval(rep, as_json: bool, save: Optional[str]) -> None:
    data = rep.as_dict()
    if save:
        Path(save).write_text(json.dumps(data, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{rep.kind} retrieval ({rep.seconds:.0f}s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rep.metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    for k, v in rep.details.items():
        if k in ("per_transform", "variants"):
            if k == "variants":
                table.add_row("the same vectors, post-processed:", "")
            for kind, m in v.items():
                table.add_row(f"  {kind}", "  ".join(f"{mk} {mv:.3f}" for mk, mv in m.items()))
        else:
            table.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    Console().print(table)


@eval_app.command("near-dup")
def eval_near_dup(folder: str = typer.Argument(..., help="folder of images (no labels needed)"),
                  distractors: Optional[list[str]] = typer.Option(None, "--distractors", "-d",
                                                                  help="folder of other images to search among "
                                                                  "(repeatable)"),
                  transforms: Optional[str] = typer.Option(None, "--transforms", help="comma-separated edits: "
                                                           "crop80,crop90,resize50,resize25,jpeg30,jpeg40,rotate10,"
                                                           "rotate-10,hflip,jitter (default: crop80,resize50,jpeg30,"
                                                           "rotate10,rotate-10,hflip,jitter)"),
                  max_originals: Optional[int] = typer.Option(None, "--max-originals", help="use a random sample "
                                                              "of this many images as originals"),
                  model: str = ModelOpt, weights: Optional[str] = WeightsOpt, as_json: bool = JsonOpt,
                  save: Optional[str] = SaveOpt) -> None:
    """Make edited copies of each image and check that searching a copy finds its original (recall@1, @5)."""
    from imgsearch import evaluation

    kinds = tuple(t.strip() for t in transforms.split(",")) if transforms else evaluation.NEAR_DUP_TRANSFORMS
    from imgsearch.samples import ALL_VARIANTS

    unknown = [k for k in kinds if k not in ALL_VARIANTS]
    if unknown:
        raise ImgSearchError(f"unknown transform(s) {', '.join(unknown)}; known: {', '.join(ALL_VARIANTS)}")
    rep = evaluation.run_near_dup(folder, model, _S, distractors=distractors or [], transforms=kinds,
                                  max_originals=max_originals, weights=weights)
    _print_eval(rep, as_json, save)


@eval_app.command("labelled")
def eval_labelled(folder: str = typer.Argument(..., help="folder with one sub-folder of images per class"),
                  model: str = ModelOpt, weights: Optional[str] = WeightsOpt, as_json: bool = JsonOpt,
                  save: Optional[str] = SaveOpt) -> None:
    """Leave-one-out retrieval over classes given by sub-folders: mAP, P@1, recall@1/5/10."""
    from imgsearch import evaluation

    _print_eval(evaluation.run_labelled(folder, model, _S, weights=weights), as_json, save)


@eval_app.command("ann")
def eval_ann(db: str = DbOpt, queries: int = typer.Option(200, "--queries", min=1, help="stored vectors used as queries"),
             k: int = typer.Option(10, "-k", min=1, max=1000),
             model: Optional[str] = typer.Option(None, "--model", "-m", help="model of the collection, if several"),
             collection: Optional[str] = typer.Option(None, "--collection"), as_json: bool = JsonOpt,
             save: Optional[str] = SaveOpt) -> None:
    """Recall@k of the collection's index (HNSW on a server, FLAT on Lite) against exact search."""
    from imgsearch import evaluation

    _print_eval(evaluation.run_ann(db, _S, queries=queries, k=k, model=model, collection=collection), as_json, save)


@app.command()
def serve(db: str = DbOpt, host: str = typer.Option(_S.host, "--host", help="address to listen on"),
          port: int = typer.Option(_S.port, "--port", help="port to listen on"),
          workers_log: str = typer.Option("warning", "--log-level", help="web server log level"),
          weights: Optional[str] = typer.Option(None, "--weights", help="weights file of the collection's model "
                                                "(e.g. CLIP weights on a machine without the model hub)")) -> None:
    """Serve the search page and REST API (model and index load once, at start-up)."""
    try:
        from imgsearch import server
    except ImportError as exc:
        raise ImgSearchError(f"the server needs its extra: pip install 'imgsearch[server]' ({exc})") from None
    settings = _S.model_copy(update={"weights": weights}) if weights else _S
    server.run(db, host, port, log_level=workers_log, settings=settings)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List the embedding models in the registry."""
    from imgsearch.models import list_models

    specs = list_models()
    if as_json:
        typer.echo(json.dumps([{"name": s.name, "dim": s.dim, "input": s.prep.crop, "description": s.description,
                                "text": s.text, "tags": s.tags, "extra": s.extra or None}
                               for s in specs], indent=2))
        return
    for s in specs:
        what = ", ".join(x for x in ("text search" if s.text else "", "auto-tags" if s.tags else "") if x)
        typer.echo(f"{s.name:20s} {s.dim:5d}-d  {s.description}" + (f" [{what}]" if what else ""))


@app.command()
def engines() -> None:
    """List the engines that can run embed, index and reduce."""
    from imgsearch.engines import engine_names

    for name in engine_names():
        typer.echo(name)


@app.command()
def doctor(model: str = ModelOpt,
           every: bool = typer.Option(False, "--all", help="probe every runtime and precision this device can run"),
           seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="length of each forward-rate probe"),
           no_probe: bool = typer.Option(False, "--no-probe", help="print the CPU and the choice only"),
           as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The CPU features seen, the runtime and precision chosen (IMGSEARCH_RUNTIME/PRECISION), and their speed here."""
    from dataclasses import asdict

    from imgsearch import doctor as doc

    rep = doc.run(_S, model=model, seconds=seconds, every=every, measure=not no_probe)
    if as_json:
        typer.echo(json.dumps(asdict(rep), indent=2))
        return
    cpu = rep.cpu
    typer.echo(f"cpu: {cpu['model']}, {cpu['cores']} cores, kind {cpu['kind']}"
               + (f" (emulated: ONEDNN_MAX_CPU_ISA={cpu['onednn_max_cpu_isa']})" if cpu["emulated"] else ""))
    typer.echo(f"  flags: {' '.join(cpu['flags']) or '-'}")
    typer.echo("versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in rep.versions.items()))
    c = rep.chosen
    typer.echo(f"chosen: {c['runtime']} {c['precision']} on {c['device']} ({c['why']}; asked runtime "
               f"{c['asked']['runtime']}, precision {c['asked']['precision']})")
    if rep.int8:
        r = rep.int8
        typer.echo(f"int8 build: {r['recipe']['weight_bits']}-bit weights, {r['recipe']['steps']} steps, cosine to "
                   f"fp32 mean {r['cosine_mean']:.4f}, forward {r['int8_img_per_s']:.1f} vs fp32 "
                   f"{r['fp32_img_per_s']:.1f} img/s at build ({r['path']})")
    elif c["device"] == "cpu":
        typer.echo("int8 build: none for this CPU kind ('imgsearch quantize DIR' makes one)")
    for p in rep.probes:
        typer.echo(f"probe {model} {p.runtime:5s} {p.precision:5s}: forward {p.forward_img_per_s:7.1f} img/s "
                   f"(batch {_S.batch_size}, {p.threads or 'all'} threads), one query {p.query_ms_p50:6.1f} ms "
                   f"({p.query_threads} thread{'s' if p.query_threads != 1 else ''})")


@app.command()
def quantize(images: str = typer.Argument(..., help="folder of images like the ones you will index (the collection "
                                          "itself is best); a spread sample of --limit is used"),
             model: str = ModelOpt, weights: Optional[str] = WeightsOpt,
             steps: int = typer.Option(300, "--steps", min=0, help="tuning steps of 16 images (~1.5 s each on 2 "
                                       "cores); 0 = plain post-training quantization"),
             limit: int = typer.Option(2000, "--limit", min=200, help="most images to read")) -> None:
    """Build the model's int8 version for this CPU kind (cached): then IMGSEARCH_PRECISION=int8 uses it, and auto
    does where it measured faster than fp32 and kept the vectors (mean cosine >= 0.98)."""
    from imgsearch import quantize as q
    from imgsearch.models.int8 import MIN_COSINE

    def progress(step: int, loss: float) -> None:
        if step % 50 == 0 or step == steps:
            typer.echo(f"step {step}/{steps}: loss {loss:.4f}", err=True)

    got = q.quantize(images, model, _S, steps=steps, limit=limit, weights=weights, progress=progress)
    r = got.report
    typer.echo(f"int8 {model}: {got.path}")
    typer.echo(f"  from {r['images']} images, {r['recipe']['weight_bits']}-bit weights, {r['recipe']['steps']} steps, "
               f"built in {r['build_s']:.0f}s")
    typer.echo(f"  cosine to fp32 on {r['holdout']} held-out images: mean {r['cosine_mean']:.4f}, "
               f"5th percentile {r['cosine_p5']:.4f}, min {r['cosine_min']:.4f}")
    typer.echo(f"  forward: int8 {r['int8_img_per_s']:.1f} img/s, fp32 {r['fp32_img_per_s']:.1f} img/s "
               f"({r['int8_img_per_s'] / r['fp32_img_per_s']:.2f}x)")
    if got.gain is None:
        typer.echo(f"warning: mean cosine below {MIN_COSINE}: auto will not use it (more --steps or more images "
                   "help); IMGSEARCH_PRECISION=int8 still does", err=True)


@app.command("sample-data")
def sample_data(out: str = typer.Argument(..., help="folder to fill with sample photos"),
                variants: bool = typer.Option(False, "--variants",
                                              help="also write modified copies (crop, resize, JPEG q40, flip)"),
                demo: bool = typer.Option(False, "--demo", help="the demo collection: a few thousand images from "
                                          "Debian packages (wallpaper photos, tuxpaint stamps, openclipart) in folders")
                ) -> None:
    """Assemble real images from installed packages (scikit-image, scikit-learn; Debian for --demo) — no network."""
    from imgsearch import samples

    if demo:
        counts = samples.write_demo_set(out)
        missing = [pkg for pkg, path in samples.DEMO_PACKAGES.items() if not path.is_dir()]
        typer.echo(f"wrote {sum(counts.values())} images to {out} ({', '.join(f'{v} {k}' for k, v in counts.items())})"
                   + (f"; not installed: {', '.join(missing)} (apt-get install them for the full demo)" if missing else ""))
        return
    written = samples.write_sample_photos(out)
    typer.echo(f"wrote {len(written)} photos to {out}")
    if variants:
        made = samples.write_variants(written, out.rstrip("/") + "-variants")
        typer.echo(f"wrote {sum(map(len, made.values()))} modified copies to {out.rstrip('/')}-variants")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 1; usage errors exit 2; anything else is a bug (traceback)."""
    try:
        app(args=argv)
    except ImgSearchError as exc:
        _err(str(exc))
        sys.exit(1)


if __name__ == "__main__":
    main()
