"""Filters on searches and on browsing, once: what a person can narrow a view by, validated here, applied by the store
(as a Milvus expression, server-side) and by the browse index (as an Arrow expression): the same meaning on both.

Every field is optional; a request states only what it narrows. Tags are resolved to the model's labels by the
caller (a keyword means several labels); everything else is checked here, with messages a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from imgsearch.errors import ImgSearchError

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO", "ICO", "PPM")
MAX_SIDE = 1_000_000


class FilterError(ImgSearchError, ValueError):
    """A filter value that cannot be used (HTTP 422, CLI exit 1): the message names the field and what it takes."""


@dataclass(frozen=True)
class Filters:
    folder: str | None = None  # path prefix: an absolute path, a file:// URI or a bucket URI
    date_from: datetime | None = None  # file modification time, inclusive, UTC
    date_to: datetime | None = None  # exclusive
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    formats: tuple[str, ...] = ()  # any of these
    tags: tuple[str, ...] | None = None  # labels (already resolved from keywords); any of them

    @property
    def empty(self) -> bool:
        return self == Filters()

    def with_tags(self, labels: tuple[str, ...] | None) -> "Filters":
        return replace(self, tags=labels)

    def as_query(self) -> dict:
        """The filters as URL query fields (what the page puts in its shareable URLs)."""
        out: dict = {}
        if self.folder:
            out["folder"] = self.folder
        if self.date_from:
            out["date_from"] = self.date_from.date().isoformat()
        if self.date_to:
            out["date_to"] = (self.date_to - timedelta(days=1)).date().isoformat()
        for key in ("min_width", "min_height", "max_width", "max_height"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.formats:
            out["format"] = list(self.formats)
        return out

    def arrow(self) -> pc.Expression | None:
        """The same filters over a browse table (columns path, mtime_us, width, height, format, tags)."""
        parts: list[pc.Expression] = []
        if self.folder:
            lo, hi = prefix_range(folder_uri(self.folder))
            parts.append((pc.field("path") >= lo) & (pc.field("path") < hi))
        if self.date_from:
            parts.append(pc.field("mtime_us") >= micros(self.date_from))
        if self.date_to:
            parts.append(pc.field("mtime_us") < micros(self.date_to))
        for key, col, op in (("min_width", "width", ">="), ("min_height", "height", ">="),
                             ("max_width", "width", "<="), ("max_height", "height", "<=")):
            v = getattr(self, key)
            if v is not None:
                parts.append(pc.field(col) >= v if op == ">=" else pc.field(col) <= v)
        if self.formats:
            parts.append(pc.field("format").isin(pa.array(list(self.formats), pa.string())))
        if self.tags is not None:
            parts.append(pc.field("tag_hit"))  # computed by the browse index (list membership)
        if not parts:
            return None
        expr = parts[0]
        for p in parts[1:]:
            expr = expr & p
        return expr


def micros(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def folder_uri(folder: str) -> str:
    """A folder as the URI prefix its images' paths start with (a trailing slash: /a/b never matches /a/bc)."""
    from urllib.parse import quote

    text = folder.strip()
    if text.startswith("/"):
        text = "file://" + quote(text, safe="/-_.~!$&'()*+,;=:@")
    if "://" not in text:
        raise FilterError(f"folder: {folder!r} is neither an absolute path nor a URI (file:///..., s3://...)")
    return text if text.endswith("/") else text + "/"


def prefix_range(prefix: str) -> tuple[str, str]:
    """[lo, hi): exactly the strings that start with `prefix` (a range, not LIKE: '%' and '_' are common in URIs)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def parse_day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value.strip()[:10]) if len(value.strip()) >= 10 else date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{field}: {value!r} is not a date; use YYYY-MM-DD") from None


def parse(*, folder: str | None = None, date_from: str | None = None, date_to: str | None = None,
          min_width: int | None = None, min_height: int | None = None, max_width: int | None = None,
          max_height: int | None = None, formats: list[str] | None = None) -> Filters:
    """Filters from request fields (strings as a URL gives them). Dates are whole days: date_to includes its day."""
    start = end = None
    if date_from:
        start = datetime.combine(parse_day(date_from, "date_from"), time(), timezone.utc)
    if date_to:
        end = datetime.combine(parse_day(date_to, "date_to") + timedelta(days=1), time(), timezone.utc)
    if start and end and end <= start:
        raise FilterError(f"date_to ({date_to}) is before date_from ({date_from})")
    sides = {"min_width": min_width, "min_height": min_height, "max_width": max_width, "max_height": max_height}
    for key, v in sides.items():
        if v is not None and not 0 <= v <= MAX_SIDE:
            raise FilterError(f"{key}: {v} is outside 0..{MAX_SIDE:,} pixels")
    for lo, hi in (("min_width", "max_width"), ("min_height", "max_height")):
        if sides[lo] is not None and sides[hi] is not None and sides[hi] < sides[lo]:
            raise FilterError(f"{hi} ({sides[hi]}) is below {lo} ({sides[lo]})")
    fmts: list[str] = []
    for f in formats or []:
        for one in f.split(","):
            name = one.strip().upper().replace("JPG", "JPEG").replace("TIF", "TIFF").replace("TIFFF", "TIFF")
            if not name:
                continue
            if name not in FORMATS:
                raise FilterError(f"format: {one.strip()!r} is not one of {', '.join(FORMATS)}")
            fmts.append(name)
    if folder is not None and folder.strip():
        folder_uri(folder)  # validates
    return Filters(folder=folder.strip() if folder and folder.strip() else None, date_from=start, date_to=end,
                   formats=tuple(dict.fromkeys(fmts)), **sides)
