"""Images in object storage (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage): list and read
objects by URI.

One file-system layer, pyarrow's (`pyarrow.fs`, C++ AWS/GCS clients in the wheel imgsearch already needs), so no
extra dependency. Credentials come as every AWS tool reads them (AWS_ACCESS_KEY_ID/..., AWS_PROFILE, ~/.aws/); the
endpoint of an S3-compatible server (MinIO, Ceph, moto) from `Settings.s3_endpoint` (IMGSEARCH_S3_ENDPOINT). GCS
credentials are Google's defaults (GOOGLE_APPLICATION_CREDENTIALS, the metadata server); IMGSEARCH_GCS_ENDPOINT
points at an emulator. Azure: `az://container/key` (fsspec's spelling; Hadoop's abfs:// stays Hadoop's) in the account
`Settings.azure_account` (IMGSEARCH_AZURE_ACCOUNT, else AZURE_STORAGE_ACCOUNT), with AZURE_STORAGE_KEY if set, else
Azure's default credentials; IMGSEARCH_AZURE_ENDPOINT points at an emulator (Azurite).

The URI rule (what ids are hashed from): `s3://bucket/key` with the key percent-encoded exactly as file URIs are
(RFC 3986 unreserved and sub-delims kept); `s3a://` and `s3n://` (Hadoop's names for the same objects) are written
as `s3://`, so an object has one id whichever engine or spelling found it. `gs://bucket/key` and
`az://container/key` likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from imgsearch.errors import SourceError

if TYPE_CHECKING:
    from pyarrow import fs as pafs

#: scheme as users (or Hadoop) write it -> the one it is stored under
BUCKET_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs", "az": "az"}
URI_SAFE = "/-_.~!$&'()*+,;=:@"


@dataclass(frozen=True)
class BucketConfig:
    """How to reach buckets: plain data, pickled into Spark tasks and decode threads alike."""

    endpoint: str = ""  # S3-compatible server, e.g. http://127.0.0.1:9000 ('' = AWS)
    region: str = ""  # '' = AWS_DEFAULT_REGION / profile / us-east-1
    anonymous: bool = False  # public buckets: no credentials sent
    gcs_endpoint: str = ""  # a GCS-compatible server (emulator); '' = Google Cloud Storage
    gcs_anonymous: bool = False  # public buckets; else Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS)
    azure_account: str = ""  # the storage account of az:// URIs
    azure_endpoint: str = ""  # an Azure-compatible blob server (Azurite); '' = <account>.blob.core.windows.net


def is_bucket_uri(uri: str) -> bool:
    return "://" in uri and uri.split("://", 1)[0].lower() in BUCKET_SCHEMES


def normalize_bucket_uri(uri: str) -> str:
    """`s3a://b/a b.jpg`, `s3://b/a%20b.jpg` -> `s3://b/a%20b.jpg`: one spelling per object."""
    parts = urlsplit(uri)
    scheme = BUCKET_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise SourceError(f"not a bucket URI (s3://bucket/key, gs://bucket/key or az://container/key): {uri}")
    key = quote_from_bytes(unquote_to_bytes(parts.path), safe=URI_SAFE)
    return f"{scheme}://{parts.netloc}{key}"


def split_bucket_uri(uri: str) -> tuple[str, str]:
    """(scheme, 'bucket/key' as the file system names it: decoded)."""
    parts = urlsplit(normalize_bucket_uri(uri))
    key = unquote_to_bytes(parts.path).decode("utf-8", errors="surrogateescape").lstrip("/")
    return parts.scheme, f"{parts.netloc}/{key}".rstrip("/")


def uri_of(scheme: str, fs_path: str) -> str:
    return normalize_bucket_uri(f"{scheme}://{quote_from_bytes(fs_path.encode('utf-8', 'surrogateescape'), safe=URI_SAFE)}")


@lru_cache(maxsize=16)
def filesystem(scheme: str, config: BucketConfig) -> "pafs.FileSystem":
    """One client per scheme and config in a process (clients are thread-safe and keep their connections)."""
    from pyarrow import fs as pafs

    if scheme == "s3":
        opts: dict = {"anonymous": config.anonymous, "connect_timeout": 10, "request_timeout": 60}
        if config.region:
            opts["region"] = config.region
        if config.endpoint:
            host, kind = _endpoint(config.endpoint)
            opts.update(endpoint_override=host, scheme=kind)
            opts.setdefault("region", "us-east-1")  # S3-compatible servers rarely care; AWS resolution needs one
        return pafs.S3FileSystem(**opts)
    if scheme == "gs":
        from datetime import timedelta

        gopts: dict = {"anonymous": config.gcs_anonymous, "retry_time_limit": timedelta(seconds=60)}
        if config.gcs_endpoint:
            host, kind = _endpoint(config.gcs_endpoint)
            gopts.update(endpoint_override=host, scheme=kind)
        return pafs.GcsFileSystem(**gopts)
    if scheme == "az":
        import os

        account = config.azure_account or os.environ.get("AZURE_STORAGE_ACCOUNT", "")
        if not account:
            raise SourceError("az:// needs the storage account: set IMGSEARCH_AZURE_ACCOUNT (or AZURE_STORAGE_ACCOUNT)")
        aopts: dict = {"account_key": os.environ.get("AZURE_STORAGE_KEY") or None}  # None: Azure's default credential
        if config.azure_endpoint:
            host, kind = _endpoint(config.azure_endpoint)
            aopts.update(blob_storage_authority=host, blob_storage_scheme=kind, dfs_storage_authority=host,
                         dfs_storage_scheme=kind)
        return pafs.AzureFileSystem(account, **aopts)
    raise SourceError(f"no file system for {scheme}://")


def _endpoint(url: str) -> tuple[str, str]:
    """(host:port, scheme) of an endpoint setting; a bare host means https."""
    ep = urlsplit(url if "://" in url else f"https://{url}")
    return ep.netloc, ep.scheme


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    mtime: datetime | None


def list_objects(root: str, config: BucketConfig) -> Iterator[ObjectInfo]:
    """Every object under a bucket URI (a prefix "folder", or one object), sorted by key; listing pages come from
    the server as the client walks them. Hidden names (a path part starting with '.') are left out, as for folders."""
    scheme, path = split_bucket_uri(root)
    fs = filesystem(scheme, config)
    from pyarrow import fs as pafs

    try:
        top = fs.get_file_info(path)
        if top.type == pafs.FileType.File:
            infos = [top]
        elif top.type == pafs.FileType.Directory or "/" not in path:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=False))
        else:
            raise SourceError(f"source not found: {root}")
    except FileNotFoundError as exc:
        raise SourceError(f"source not found: {root}") from exc
    except OSError as exc:
        raise SourceError(f"cannot list {root}: {first_line(exc)}") from exc
    base = path.count("/")
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path.split("/")[base + (0 if top.type == pafs.FileType.File else 1):]
        if any(part.startswith(".") for part in rel):
            continue
        mtime = info.mtime.astimezone(timezone.utc) if info.mtime is not None else None
        yield ObjectInfo(uri_of(scheme, info.path), info.size, mtime)


def read_object(uri: str, config: BucketConfig, max_bytes: int | None = None, head: int | None = None) -> bytes:
    """An object's bytes (or its first `head` bytes). Errors are OSErrors of the kind a local read would raise:
    FileNotFoundError (gone), PermissionError (denied), OSError (anything else, with the server's reason)."""
    with open_object(uri, config) as fh:
        if head is not None:
            return _mapped(fh.read, head)
        if max_bytes is not None and fh.size() > max_bytes:
            from imgsearch.failures import Reason

            raise OSError(Reason.TOO_LARGE.message(limit=max_bytes))
        return _mapped(fh.read)


def open_object(uri: str, config: BucketConfig):
    """A readable, seekable stream of an object (pyarrow NativeFile: `size()`, `read(n)`; close it). The object is
    looked up here, so a missing or denied one raises here, before a caller starts answering."""
    scheme, path = split_bucket_uri(uri)
    return _mapped(filesystem(scheme, config).open_input_file, path)


def _mapped(call, *args):
    try:
        return call(*args)
    except FileNotFoundError:
        raise
    except OSError as exc:
        text = str(exc)
        if any(m in text for m in ("ACCESS_DENIED", "AccessDenied", "HTTP status 403", "AuthorizationFailure",
                                   "AuthorizationPermissionMismatch")):
            raise PermissionError(13, f"access denied: {first_line(exc)}") from exc
        raise


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
