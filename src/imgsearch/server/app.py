"""FastAPI application: thin routes over SearchService. Errors are JSON {"detail": ...} with the right status."""

from __future__ import annotations

import mimetypes
import secrets
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from imgsearch import __version__
from imgsearch.config import Settings, get_settings
from imgsearch.server.metrics import Metrics
from imgsearch.browse import MAX_PAGE
from imgsearch.duplicates import DEFAULT_THRESHOLD
from imgsearch.filters import FilterError, Filters, folder_uri
from imgsearch.filters import parse as parse_filters
from imgsearch.query import MAX_TEXT_CHARS
from imgsearch.service import (BadImage, BadQuery, NotAnImage, SearchOutcome, SearchService, SourceUnavailable,
                               valid_id)
from imgsearch.sources import display_name

STATIC = Path(__file__).parent / "static"
KQuery = Annotated[Optional[int], Query(alias="k", ge=1, le=100, description="number of results (1..100)")]


class Result(BaseModel):
    id: str
    path: str
    name: str
    score: float
    thumbnail_url: str
    image_url: str
    tags: list[str] = []
    tag_scores: list[float] = []
    same_picture: Optional[dict] = Field(None, description="for a search by image: set when this image is the same "
                                         "picture as the query (verified from the pixels), with the evidence: edits "
                                         "(scaled, cropped, border, band), coverage, ncc")


class SearchBody(BaseModel):
    """A search without an image, as JSON: by text (image-text models) and/or by tag keywords."""
    text: Optional[str] = Field(None, max_length=MAX_TEXT_CHARS, description="words (CLIP models)")
    tag: list[str] = Field([], max_length=8, description="keywords: images auto-tagged with any of them")
    k: int = Field(10, ge=1, le=100)
    path_prefix: Optional[str] = Field(None, max_length=4096)


class ImageMeta(BaseModel):
    id: str
    path: str
    name: str
    width: int
    height: int
    bytes: int
    mtime: Optional[str]
    format: Optional[str]
    tags: list[str]
    tag_scores: list[float]
    thumbnail_url: str
    image_url: str


class SearchResponse(BaseModel):
    results: list[Result]
    k: int
    count: int
    model: str
    took_ms: float
    timings_ms: dict[str, float]
    message: Optional[str] = None


class BrowsePage(BaseModel):
    total: int
    offset: int
    limit: int
    sort: str
    items: list[ImageMeta]


def meta_of(rec: dict) -> ImageMeta:
    mtime = rec.get("mtime_us") or 0
    iid = rec["id"]
    return ImageMeta(id=iid, path=rec["path"], name=display_name(rec["path"]), width=rec.get("width") or 0,
                     height=rec.get("height") or 0, bytes=rec.get("bytes") or 0,
                     mtime=datetime.fromtimestamp(mtime / 1e6, timezone.utc).isoformat() if mtime else None,
                     format=rec.get("format") or None, tags=list(rec.get("tags") or []),
                     tag_scores=[round(float(p), 4) for p in rec.get("tag_scores") or []],
                     thumbnail_url=f"/api/images/{iid}/thumbnail", image_url=f"/api/images/{iid}")


FILTER_FIELDS = ("folder", "date_from", "date_to", "min_width", "min_height", "max_width", "max_height", "format")
Side = Annotated[Optional[int], Query(ge=0, le=1_000_000)]


def filter_params(folder: Annotated[Optional[str], Query(max_length=4096, description="folder: absolute path or URI")] = None,
                  date_from: Annotated[Optional[str], Query(max_length=40, description="YYYY-MM-DD (file date)")] = None,
                  date_to: Annotated[Optional[str], Query(max_length=40, description="YYYY-MM-DD, inclusive")] = None,
                  min_width: Side = None, min_height: Side = None, max_width: Side = None, max_height: Side = None,
                  format: Annotated[list[str], Query(max_length=100, description="JPEG, PNG, ...")] = []) -> Filters:
    """Filters shared by searches and browsing, from the query string (a 422 names what is wrong)."""
    try:
        return parse_filters(folder=folder, date_from=date_from, date_to=date_to, min_width=min_width,
                             min_height=min_height, max_width=max_width, max_height=max_height, formats=format)
    except FilterError as exc:
        raise HTTPException(422, str(exc)) from None


def only_fields(*allowed: str):
    """A dependency that refuses query fields a route does not know (a typo must not silently widen a search)."""
    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(allowed))
        if unknown:
            raise HTTPException(422, f"unknown query field(s): {', '.join(unknown)}; this route takes "
                                     f"{', '.join(allowed)}")
    return Depends(check)


def create_app(db: str | None = None, settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    """Build the app. The model and store open once, at start-up (or use a given service, e.g. in tests)."""
    s = settings or get_settings()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service or SearchService(db or s.db, settings=s)
        state["svc"] = svc
        state["metrics"] = Metrics(lambda: svc.count())
        yield
        if service is None:
            svc.close()

    app = FastAPI(title="imgsearch", version=__version__, lifespan=lifespan,
                  description="Upload an image, get the most similar indexed images.")

    def svc() -> SearchService:
        return state["svc"]

    # -- cross-cutting: upload cap, metrics ----------------------------------------------------------------------
    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > s.max_upload_bytes + 64 * 1024:
            response: Response = JSONResponse({"detail": f"upload too large: limit is {s.max_upload_bytes:,} bytes"},
                                              status_code=413)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics: Metrics | None = state.get("metrics")
        if metrics is not None:
            metrics.requests.labels(request.method, template, str(response.status_code)).inc()
            metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)
        return response

    def api_key_from(request: Request) -> str:
        key = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        return key

    def check_key(request: Request, what: str) -> None:
        if not s.api_key:
            raise HTTPException(403, f"{what} is disabled: set IMGSEARCH_API_KEY on the server to enable it")
        key = api_key_from(request)
        if not key:
            raise HTTPException(401, "API key required (X-API-Key header or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(key.encode(), s.api_key.encode()):
            raise HTTPException(403, "invalid API key")

    def require_write(request: Request) -> None:
        check_key(request, "writing")

    def require_read(request: Request) -> None:
        if s.protect_reads:
            check_key(request, "reading")

    Read = Depends(require_read)
    Write = Depends(require_write)

    # -- helpers ------------------------------------------------------------------------------------------------
    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(s.max_upload_bytes + 1)
        if len(data) > s.max_upload_bytes:
            raise HTTPException(413, f"upload too large: limit is {s.max_upload_bytes:,} bytes")
        return data

    def to_response(out: SearchOutcome, k: int, started: float) -> SearchResponse:
        m: Metrics = state["metrics"]
        for stage, ms in out.timings_ms.items():
            if stage != "batch":
                m.search_stage.labels(stage).observe(ms / 1000)
        results = [Result(id=h.id, path=h.path, name=display_name(h.path), score=round(h.score, 6),
                          thumbnail_url=f"/api/images/{h.id}/thumbnail", image_url=f"/api/images/{h.id}",
                          tags=list(h.tags), tag_scores=list(h.tag_scores), same_picture=out.copies.get(h.id))
                   for h in out.hits]
        return SearchResponse(results=results, k=k, count=svc().count(), model=svc().model_name,
                              took_ms=round((time.perf_counter() - started) * 1000, 2),
                              timings_ms={k_: round(v, 2) for k_, v in out.timings_ms.items()}, message=out.message)

    def image_error(exc: Exception) -> HTTPException:
        return HTTPException(415 if isinstance(exc, NotAnImage) else 422, str(exc))

    # -- routes -------------------------------------------------------------------------------------------------
    async def answer(started: float, k: int, data: bytes | None, text: str | None, tags: list[str],
                     path_prefix: str | None, filters: Filters | None = None, expand: bool = True) -> SearchResponse:
        tags = [t for t in tags if t and t.strip()]
        sv = svc()
        try:
            if data is not None:
                if text:
                    raise BadQuery("give an image or a text, not both")
                out = await run_in_threadpool(sv.search_bytes, data, k, path_prefix, tags or None, filters, expand)
            elif text:
                out = await run_in_threadpool(sv.search_text, text, k, path_prefix, tags or None, filters, expand)
            elif tags:
                out = await run_in_threadpool(sv.search_tags, tags, k, path_prefix, filters)
            else:
                raise BadQuery("nothing to search for: send an image (file), a text or a tag")
        except (NotAnImage, BadImage) as exc:
            raise image_error(exc) from None
        except (BadQuery, FilterError) as exc:
            raise HTTPException(422, str(exc)) from None
        return to_response(out, k, started)

    @app.post("/api/search", response_model=SearchResponse, dependencies=[Read], openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": SearchBody.model_json_schema()}}}})
    async def search(request: Request, filters: Annotated[Filters, Depends(filter_params)],
                     expand: Annotated[bool, Query(description="query expansion (default on)")] = True,
                     file: Annotated[Optional[UploadFile], File(description="the query image")] = None,
                     k_query: KQuery = None,
                     k_form: Annotated[Optional[int], Form(alias="k", ge=1, le=100)] = None,
                     text: Annotated[Optional[str], Form(max_length=MAX_TEXT_CHARS,
                                                         description="words (CLIP models)")] = None,
                     tag: Annotated[list[str], Form(description="keywords: only images tagged with any")] = [],
                     path_prefix: Annotated[Optional[str], Form(max_length=4096)] = None,
                     path_prefix_q: Annotated[Optional[str], Query(alias="path_prefix", max_length=4096)] = None):
        """Top-k indexed images for an uploaded image (`file`), a `text` (models with a text encoder) or `tag`
        keywords (models that auto-tag); `tag` with an image or text keeps only images with those tags. A form
        (multipart: needed for a file) or JSON ({"text", "tag", "k", "path_prefix"}). `k` default 10. Filters
        (folder, dates, sizes, format) come in the query string, as for every search and browse route."""
        started = time.perf_counter()
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                body = SearchBody.model_validate_json(await request.body())
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            return await answer(started, body.k, None, body.text, body.tag, body.path_prefix, filters, expand)
        k = k_form or k_query or 10
        data = await read_upload(file) if file is not None else None
        return await answer(started, k, data, text, tag, path_prefix or path_prefix_q, filters, expand)

    @app.get("/api/search", response_model=SearchResponse,
             dependencies=[Read, only_fields("text", "tag", "k", "path_prefix", "expand", *FILTER_FIELDS)])
    async def search_get(filters: Annotated[Filters, Depends(filter_params)],
                         expand: Annotated[bool, Query(description="query expansion (default on)")] = True,
                         text: Annotated[Optional[str], Query(max_length=MAX_TEXT_CHARS)] = None,
                         tag: Annotated[list[str], Query(max_length=200)] = [],
                         k: KQuery = None,
                         path_prefix: Annotated[Optional[str], Query(max_length=4096)] = None):
        """Search by `text` and/or `tag` keywords in the URL (a shareable link), with filters."""
        return await answer(time.perf_counter(), k or 10, None, text, tag, path_prefix, filters, expand)

    @app.get("/api/images", response_model=BrowsePage,
             dependencies=[Read, only_fields("sort", "offset", "limit", "tag", *FILTER_FIELDS)])
    async def browse(filters: Annotated[Filters, Depends(filter_params)],
                     sort: Annotated[Literal["date", "date_asc", "name", "size"], Query()] = "date",
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                     limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 60,
                     tag: Annotated[list[str], Query(max_length=200)] = []):
        """The collection page by page: newest first (`date`), oldest first, by name or by size, with filters."""
        try:
            page = await run_in_threadpool(svc().browse_page, filters, [t for t in tag if t.strip()] or None, sort,
                                           offset, limit)
        except (BadQuery, FilterError) as exc:
            raise HTTPException(422, str(exc)) from None
        return BrowsePage(total=page.total, offset=offset, limit=limit, sort=sort,
                          items=[meta_of(r) for r in page.rows])

    @app.get("/api/folders", dependencies=[Read, only_fields("parent")])
    async def folders(parent: Annotated[Optional[str], Query(max_length=4096)] = None):
        """Sub-folders of `parent` (a folder URI; default: the collection's top folder) with image counts."""
        if parent is not None:
            try:
                parent = folder_uri(parent)
            except FilterError as exc:
                raise HTTPException(422, str(exc)) from None
        return await run_in_threadpool(svc().folders, parent)

    @app.get("/api/duplicates", dependencies=[Read, only_fields("mode", "threshold", "offset", "limit", "format")])
    async def duplicates(mode: Annotated[Literal["same", "similar"], Query()] = "same",
                         threshold: Annotated[float, Query(ge=SearchService.DUPLICATES_MIN, le=1.0)] = DEFAULT_THRESHOLD,
                         offset: Annotated[int, Query(ge=0)] = 0,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50,
                         format: Annotated[Literal["json", "csv"], Query()] = "json"):
        """Duplicate groups, largest first, paged by group; 202 while the first computation runs (poll again).
        mode=same (the default): the same picture, verified from the pixels: identical files and edited copies
        (scaled, re-encoded, cropped, bordered, captioned), each with its evidence, and the one to keep. mode=similar:
        look-alikes linked at cosine >= `threshold` (they chain: a browsing aid, not a list to delete from).
        `format=csv` exports every group: one line per image."""
        verified = mode == "same"
        try:
            got = await run_in_threadpool(svc().duplicates, threshold, verified=verified)
        except RuntimeError as exc:
            raise HTTPException(500, f"duplicate search failed: {exc}") from None
        if got is None:
            return JSONResponse({"status": "computing", "detail": "finding duplicates: ask again shortly"},
                                status_code=202, headers={"Retry-After": "1"})
        groups = got["groups"]
        if format == "csv":
            name = "duplicates-same.csv" if verified else f"duplicates-{threshold}.csv"
            return Response(duplicates_csv(groups, verified), media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        page = [{**g, "images": [{**im, "name": display_name(im["path"]),
                                  "thumbnail_url": f"/api/images/{im['id']}/thumbnail",
                                  "image_url": f"/api/images/{im['id']}"} for im in g["images"]]}
                for g in groups[offset:offset + limit]]
        extra = ({"skipped": got.get("skipped", []), "candidates": got.get("candidates"),
                  "verifications": got.get("verifications")} if verified else {"threshold": threshold})
        return {"status": "ready", "mode": mode, "images": got["images"], "groups_total": len(groups),
                "images_in_groups": sum(g["size"] for g in groups), "offset": offset, "limit": limit,
                "method": got.get("method"), **extra, "groups": page}

    @app.get("/api/images/{image_id}/duplicates", response_model=list[Result], dependencies=[Read])
    async def image_duplicates(image_id: str,
                               threshold: Annotated[float, Query(ge=0.5, le=1.0)] = DEFAULT_THRESHOLD):
        """The image's near-duplicates: indexed images at cosine >= threshold (itself excluded); `same_picture` set
        on those that are the same picture, verified from the pixels (the best 10 are checked)."""
        out = await run_in_threadpool(svc().duplicate_group, image_id, threshold)
        if out is None:
            raise HTTPException(404, "no indexed image with this id")
        return [Result(id=h.id, path=h.path, name=display_name(h.path), score=round(h.score, 6),
                       thumbnail_url=f"/api/images/{h.id}/thumbnail", image_url=f"/api/images/{h.id}",
                       tags=list(h.tags), tag_scores=list(h.tag_scores), same_picture=out.copies.get(h.id))
                for h in out.hits]

    @app.get("/api/status", dependencies=[Read])
    async def status():
        """What is served: collection, model, dims, reducer, index, the last indexing run, failed files."""
        return await run_in_threadpool(svc().status)

    @app.get("/api/tags", dependencies=[Read])
    async def tags(prefix: Annotated[str, Query(max_length=100)] = "",
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50):
        """The tags the served model gives (its classifier's labels) starting with `prefix`: for suggestions."""
        sv = svc()
        return {"model": sv.model_name, "tags": sv.tag_vocabulary(prefix, limit), "text": sv.embedder.has_text}

    @app.get("/api/images/{image_id}/similar", response_model=SearchResponse, dependencies=[Read])
    async def similar(image_id: str, filters: Annotated[Filters, Depends(filter_params)], k: KQuery = None,
                      path_prefix: Annotated[Optional[str], Query(max_length=4096)] = None,
                      expand: Annotated[bool, Query(description="query expansion (default on)")] = True):
        """More like this: neighbours of an indexed image (the image itself excluded), with filters."""
        started = time.perf_counter()
        try:
            out = await run_in_threadpool(svc().similar, image_id, k or 10, path_prefix, filters, expand)
        except FilterError as exc:
            raise HTTPException(422, str(exc)) from None
        if out is None:
            raise HTTPException(404, "no indexed image with this id")
        return to_response(out, k or 10, started)

    @app.get("/api/images/{image_id}", dependencies=[Read])
    async def image(image_id: str):
        """The original of an indexed image (looked up by id; clients never name a path): a local file, or the
        object streamed from its bucket."""
        try:
            got = await run_in_threadpool(svc().original, image_id) if valid_id(image_id) else None
        except SourceUnavailable as exc:
            raise HTTPException(502, f"the image's storage failed: {exc}") from None
        if got is None:
            raise HTTPException(404, "no indexed image with this id, or its file is gone")
        headers = {"Cache-Control": "private, max-age=3600"}
        if got.path is not None:
            return FileResponse(got.path, headers=headers)
        media = mimetypes.guess_type(got.name)[0] or "application/octet-stream"
        return StreamingResponse(iterate_in_threadpool(got.chunks()), media_type=media,
                                 headers={**headers, "Content-Length": str(got.stream.size())})

    @app.get("/api/images/{image_id}/meta", response_model=ImageMeta, dependencies=[Read])
    async def image_meta(image_id: str):
        """What is stored about an indexed image: path, size, dimensions, format, date, tags."""
        rec = await run_in_threadpool(svc().record, image_id)
        if rec is None:
            raise HTTPException(404, "no indexed image with this id")
        return meta_of(rec)

    @app.get("/api/images/{image_id}/thumbnail", dependencies=[Read])
    async def thumbnail(image_id: str):
        try:
            path = await run_in_threadpool(svc().thumbnail, image_id) if valid_id(image_id) else None
        except SourceUnavailable as exc:
            raise HTTPException(502, f"the image's storage failed: {exc}") from None
        if path is None:
            raise HTTPException(404, "no indexed image with this id, or it cannot be shown")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})

    @app.post("/api/images", status_code=201, dependencies=[Write])
    async def add_image(file: Annotated[UploadFile, File(description="image to add to the index")]):
        data = await read_upload(file)
        try:
            return await run_in_threadpool(svc().add_image, file.filename or "upload", data)
        except (NotAnImage, BadImage) as exc:
            raise image_error(exc) from None

    @app.delete("/api/images/{image_id}", dependencies=[Write])
    async def delete_image(image_id: str):
        if not await run_in_threadpool(svc().delete, image_id):
            raise HTTPException(404, "no indexed image with this id")
        return {"deleted": image_id}

    @app.get("/api/stats", dependencies=[Read])
    async def stats():
        sv = svc()
        info = await run_in_threadpool(sv.info)
        return {"count": info.count if info else 0, "model": sv.model_name, "dim": info.dim if info else sv.embedder.dim,
                "text": sv.embedder.has_text, "tags": sv.embedder.spec.tags and (info is None or info.has_tags),
                "reducer": info.reducer if info else None,
                "collection": info.name if info else None, "index_type": info.index_type if info else None,
                "db": sv.db, "uptime_s": round(time.time() - sv.started, 1), "version": __version__,
                "query_batches": sv.batcher.batches, "queries_embedded": sv.batcher.images,
                "max_upload_bytes": s.max_upload_bytes, "max_k": 100, "query_path": sv.query_path}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "count": await run_in_threadpool(svc().count)}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state["metrics"].registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def run(db: str, host: str, port: int, log_level: str = "warning", settings: Settings | None = None) -> None:
    """Serve until interrupted. The store is opened (and a Lite file locked) and the model loaded before listening,
    so a busy database or a missing model fails at once with a clear message."""
    import sys

    import uvicorn

    service = SearchService(db, settings=settings)
    print(f"serving {service.count()} images ({service.model_name}) from {db} at http://{host}:{port}/ "
          "(Ctrl+C to stop)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(create_app(db, settings=settings, service=service), host=host, port=port, log_level=log_level)
    finally:
        service.close()


def duplicates_csv(groups: list[dict], verified: bool = False) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    if verified:
        w.writerow(["group", "group_size", "kind", "rank_in_group", "relation", "keep", "edits", "id", "path", "width",
                    "height", "bytes"])
    else:
        w.writerow(["group", "group_size", "min_similarity", "rank_in_group", "id", "path", "width", "height", "bytes"])
    for gi, g in enumerate(groups, 1):
        for ri, im in enumerate(g["images"], 1):
            tail = [im["id"], im["path"], im.get("width"), im.get("height"), im.get("bytes")]
            if verified:
                edits = " ".join(im.get("evidence", {}).get("edits", []))
                w.writerow([gi, g["size"], g["kind"], ri, im["relation"], im["id"] == g["keep_id"], edits, *tail])
            else:
                w.writerow([gi, g["size"], g["min_similarity"], ri, *tail])
    return buf.getvalue()
