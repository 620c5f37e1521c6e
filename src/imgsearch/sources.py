"""Where images come from: list candidate image files under a source and read their bytes.

Every image is named by a normalised URI (`file:///abs/path`, percent-encoded as RFC 8089 wants, so that any file
name, even one that is not valid UTF-8, survives the round trip; `s3://bucket/key` for objects, see `buckets`) and
identified by a hash of that URI. The Spark engine normalises the URIs Hadoop gives it to the same form, so both
engines produce the same ids for the same files.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from imgsearch.buckets import BucketConfig, is_bucket_uri, list_objects, normalize_bucket_uri, read_object
from imgsearch.errors import SourceError
from imgsearch.failures import Reason
from imgsearch.imaging import IMAGE_EXTENSIONS, SNIFF_BYTES, sniff_format

REMOTE_SCHEMES = ("hdfs", "s3a", "s3", "s3n", "gs", "gcs", "az", "abfs", "abfss", "wasb", "wasbs", "viewfs")


@dataclass(frozen=True)
class FileRecord:
    """One source file as every stage names it: normalised URI, stable id, size and modification time (if known)."""

    uri: str  # normalised URI, e.g. file:///abs/path
    id: str
    size: int | None
    mtime: datetime | None  # UTC


def image_id(uri: str) -> str:
    """Stable id of an image: 32 hex chars of BLAKE2b over its normalised URI."""
    return hashlib.blake2b(uri.encode("utf-8"), digest_size=16).hexdigest()


def path_to_uri(path: str | os.PathLike[str] | bytes) -> str:
    """Absolute, normalised file URI; bytes that are not safe in a URI are percent-encoded."""
    raw = os.fsencode(os.path.abspath(os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)))
    return "file://" + quote_from_bytes(raw, safe="/-_.~!$&'()*+,;=:@")


def normalize_uri(uri: str) -> str:
    """Canonical form of a URI as Hadoop or a user writes it: `file:/x` and `file:///x` both become `file:///x`."""
    if uri.startswith("file:"):
        rest = uri[len("file:") :]
        if rest.startswith("//") and not rest.startswith("///"):
            rest = rest[len("//localhost") :] if rest.startswith("//localhost/") else rest[1:]
        raw = unquote_to_bytes(rest.lstrip("/"))
        return "file://" + quote_from_bytes(b"/" + raw, safe="/-_.~!$&'()*+,;=:@")
    if "://" not in uri:
        return path_to_uri(uri)
    if is_bucket_uri(uri):
        return normalize_bucket_uri(uri)
    return uri


def uri_to_path(uri: str) -> str:
    """Local path (str, with surrogate escapes for undecodable bytes) of a file:// URI."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise SourceError(f"not a local file URI: {uri}")
    return os.fsdecode(unquote_to_bytes(parts.path))


def local_path(path_or_uri: str | os.PathLike[str]) -> str:
    """A local path for a path or a file: URI (`file:/x`, `file:///x`): what users and Hadoop write for local files."""
    text = os.fspath(path_or_uri)
    return uri_to_path(normalize_uri(text)) if text.startswith("file:") else text


def display_name(uri: str) -> str:
    """A readable file name for people (the URI stays the key)."""
    raw = unquote_to_bytes(urlsplit(uri).path).rstrip(b"/")
    return raw.rsplit(b"/", 1)[-1].decode("utf-8", errors="replace")


def is_remote(src: str) -> bool:
    """Not on this machine's file system: a Hadoop file system or a bucket."""
    return "://" in src and src.split("://", 1)[0].lower() in REMOTE_SCHEMES


def is_bucket(src: str) -> bool:
    """An object-store URI this process reads itself (s3://, s3a://, gs://, az://), with any engine."""
    return is_bucket_uri(os.fspath(src))


def read_by_workers(src: str) -> bool:
    """A bucket URI the Spark engine lists on the driver and reads in its Python workers (s3://, gs://, az://); Hadoop's
    own spellings (s3a://, s3n://) are left to Hadoop's connector, with the cluster's fs.s3a.* configuration."""
    return is_bucket(src) and os.fspath(src).split("://", 1)[0].lower() not in ("s3a", "s3n")


def is_hadoop_only(src: str) -> bool:
    """A remote URI only Hadoop's file systems read (hdfs://, abfs://, ...): the Spark engine's."""
    return is_remote(src) and not is_bucket(src)


@dataclass
class ListingReport:
    candidates: int = 0
    skipped_non_images: int = 0
    skipped_hidden: int = 0
    unreadable: list[tuple[str, Reason, str]] | None = None  # (uri, reason, message): entries not even stat'ed


def list_images(src: str | os.PathLike[str], report: ListingReport | None = None,
                buckets: BucketConfig | None = None) -> Iterator[FileRecord]:
    """Candidate images under a local file or folder (or a bucket prefix), sorted, recursive, symlinked dirs not
    followed (no loops), hidden (dot) files and folders skipped.

    A file is a candidate when its extension is an image extension or its first bytes are an image signature. Candidates
    that then fail to decode are recorded as failures by the engine; other files (README.txt, .DS_Store) are skipped.
    """
    src_str = os.fspath(src)
    report = report if report is not None else ListingReport()
    if report.unreadable is None:
        report.unreadable = []
    if is_bucket(src_str):
        yield from _list_bucket(src_str, report, buckets or BucketConfig())
        return
    if is_remote(src_str):
        raise SourceError(
            f"{src_str}: only Hadoop reads {src_str.split('://')[0]}:// sources: use --engine spark"
        )
    src_str = local_path(src_str)
    root = Path(src_str)
    if not root.exists():
        raise SourceError(f"source not found: {root}")
    if root.is_file():
        entries: Iterator[Path] = iter([root])
    elif root.is_dir():
        entries = _walk(root, report)
    else:
        raise SourceError(f"source is neither a file nor a folder: {root}")
    for path in entries:
        try:
            st = path.stat()
        except OSError as exc:
            report.unreadable.append((path_to_uri(path), Reason.CANNOT_STAT,
                                      Reason.CANNOT_STAT.message(detail=exc.strerror or exc)))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if not _is_candidate(path, report):
            report.skipped_non_images += 1
            continue
        report.candidates += 1
        uri = path_to_uri(path)
        yield FileRecord(uri=uri, id=image_id(uri), size=st.st_size, mtime=mtime_of(st))


def _list_bucket(src: str, report: ListingReport, buckets: BucketConfig) -> Iterator[FileRecord]:
    """Objects under a bucket prefix, by the same candidate rule (a name without an image extension costs one
    16-byte ranged read to sniff; an object that cannot even be sniffed is left out, as an unreadable local file is)."""
    for obj in list_objects(src, buckets):
        name = display_name(obj.uri)
        if not looks_like_image(name):
            try:
                head = read_object(obj.uri, buckets, head=SNIFF_BYTES)
            except OSError:
                head = b""
            if not looks_like_image("", head):
                report.skipped_non_images += 1
                continue
        report.candidates += 1
        yield FileRecord(uri=obj.uri, id=image_id(obj.uri), size=obj.size, mtime=obj.mtime)


def mtime_of(st: os.stat_result) -> datetime:
    """Modification time, truncated to the microsecond exactly (no float rounding), in UTC."""
    us = st.st_mtime_ns // 1000
    return datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc) + timedelta(microseconds=us % 1_000_000)


def _walk(root: Path, report: ListingReport) -> Iterator[Path]:
    def on_error(exc: OSError) -> None:
        assert report.unreadable is not None
        report.unreadable.append((path_to_uri(exc.filename or root), Reason.CANNOT_LIST,
                                  Reason.CANNOT_LIST.message(detail=exc.strerror or exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        # Hidden entries (.thumbnails/, .DS_Store, editors' temp files) are skipped, as Spark's file listing does.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                report.skipped_hidden += 1
                continue
            yield Path(dirpath) / name


def looks_like_image(name: str, head: bytes = b"") -> bool:
    """The candidate rule every engine applies: an image extension, or an image signature in the first bytes."""
    dot = name.rfind(".")
    return (dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS) or sniff_format(head[:SNIFF_BYTES]) is not None


def _is_candidate(path: Path, report: ListingReport) -> bool:
    if looks_like_image(path.name):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return False  # not an image by name, and unreadable: nothing to say about it
    return looks_like_image("", head)


def read_bytes(uri: str, max_bytes: int | None = None, buckets: BucketConfig | None = None) -> bytes:
    """All bytes of a local file or bucket object URI. Raises OSError (with the reason) if it cannot be read."""
    if is_bucket(uri):
        return read_object(uri, buckets or BucketConfig(), max_bytes)
    path = uri_to_path(uri)
    with open(path, "rb") as fh:
        if max_bytes is None:
            return fh.read()
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(Reason.TOO_LARGE.message(limit=max_bytes))
    return data
