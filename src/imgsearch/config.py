"""All settings in one place. Every CLI option defaults from here; each can be set by an IMGSEARCH_* variable.

The edges (CLI, server) build one Settings and pass it down; nothing below them reads the environment itself."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Milvus Lite's exact (FLAT) search scans every stored number per query and is bound by memory bandwidth: at 1M
# vectors it took 32.5 ms p50 at 96 dims, 53 ms at 128 and 94-102 ms at 256 (2-core AVX2 machine, bench scale):
# ~0.3 ms per million floats + ~10 ms. Its IVF_FLAT is fast but stays at recall@10 ~0.79 (Lite ignores nprobe), so FLAT is kept up to
# ~45 ms a query: 100M floats (1M x 96, 78k x 1280).
LITE_FLAT_MAX_FLOATS = 100_000_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGSEARCH_", extra="ignore")

    db: str = Field("imgsearch-data/imgsearch.db", description="Milvus URI: a file path (Milvus Lite) or http://host:19530")
    model: str = Field("efficientnet_lite0", description="embedding model name from the registry")
    weights: str = Field("", description="weights file of the served collection's model (CLIP weights offline); "
                                         "empty = the model's own source")
    batch_size: int = Field(32, ge=1, le=1024, description="images per forward pass")
    workers: int = Field(0, ge=0, description="decode threads; 0 = number of CPU cores")
    torch_threads: int = Field(0, ge=0, description="intra-op threads for torch; 0 = number of CPU cores")
    precision: str = Field("auto", pattern="^(auto|fp32|bf16|fp16|int8)$",
                           description="inference precision; auto = bf16 on CPUs with native bf16 and on CUDA, int8 "
                           "where 'imgsearch quantize' built a faster int8 model for this CPU, else fp32")
    runtime: str = Field("auto", pattern="^(auto|torch|onnx)$",
                         description="inference runtime; auto = torch on CUDA and on CPUs with native bf16, else "
                         "ONNX Runtime (see 'imgsearch doctor')")
    cache_dir: str = Field("", description="exported/compiled models; empty = $XDG_CACHE_HOME/imgsearch or "
                           "~/.cache/imgsearch")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    max_pixels: int = Field(100_000_000, ge=1, description="decompression-bomb guard: refuse larger images")
    rows_per_part: int = Field(4096, ge=1, description="rows per Parquet part file written by the local engine")
    part_seconds: float = Field(20.0, ge=0, description="the local engine commits a part at least this often: "
                                "the most work a crash can lose")
    insert_batch: int = Field(4096, ge=1, description="most rows per Milvus insert/upsert call (calls also stay "
                              "within 4 MB of vectors)")
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="files larger than this are recorded as failed "
                                "without being read (both engines)")
    s3_endpoint: str = Field("", description="S3-compatible server for s3:// sources (http://host:9000); empty = "
                             "AWS. Credentials: the usual AWS_* variables or profile")
    s3_region: str = Field("", description="bucket region; empty = AWS_DEFAULT_REGION, the profile's, or us-east-1")
    s3_anonymous: bool = Field(False, description="read public buckets without credentials")
    gcs_endpoint: str = Field("", description="a GCS-compatible server for gs:// (an emulator); empty = Google Cloud "
                              "Storage with Google's default credentials")
    gcs_anonymous: bool = Field(False, description="read public gs:// buckets without credentials")
    azure_account: str = Field("", description="storage account of az://container/key URIs (else "
                               "AZURE_STORAGE_ACCOUNT); the key from AZURE_STORAGE_KEY, else Azure's default credential")
    azure_endpoint: str = Field("", description="an Azure-compatible blob server for az:// (Azurite, "
                                "http://127.0.0.1:10000); empty = the account's blob.core.windows.net")
    io_threads: int = Field(16, ge=1, le=256, description="concurrent object reads when indexing a bucket")
    worker_log: str = Field("", description="file to which engines append 'load <pid>' and 'batch <pid> <n>' lines "
                            "(tests, benchmarks, curious operators count model loads and work done with it)")
    quality_sample: int = Field(20_000, ge=100, description="vectors on which a PCA fit's recall@10 is reported")

    # vector store
    milvus_token: str = Field("", description="token for a Milvus server (user:password or an API key)")
    milvus_import_dir: str = Field("", description="a folder the Milvus server can read (e.g. a milvus-server on "
                                   "this machine, which keeps its data on local disk): loads of new rows into a "
                                   "server are then written there as Parquet files and bulk-imported by the server "
                                   "itself, several times faster than inserting through the API; empty = inserts")
    hnsw_m: int = Field(16, ge=2, le=2048, description="HNSW graph degree of new collections on a Milvus server")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW build-time candidate list on a Milvus server")
    hnsw_ef: int = Field(64, ge=1, description="HNSW search-time candidate list (at least k)")
    query_expansion: int = Field(3, ge=0, le=20, description="alpha query expansion: each image or text query is "
                                 "searched again as itself plus its N nearest images weighted by similarity^alpha "
                                 "(raised labelled mAP on every set measured, bench/quality.py); 0 = off")
    query_expansion_alpha: float = Field(3.0, ge=0, le=20, description="the alpha of query expansion")
    index_type: str = Field("auto", pattern="^(auto|FLAT|IVF_FLAT|HNSW)$",
                            description="vector index; auto = HNSW on a server, FLAT on Milvus Lite up to "
                            "lite_flat_max_floats numbers per query, then IVF_FLAT (rebuilt as a collection grows)")
    lite_flat_max_floats: int = Field(LITE_FLAT_MAX_FLOATS, ge=0, description="auto index on Milvus Lite: exact "
                                      "FLAT search while count x dim stays within this (78k x 1280, 1M x 96)")
    ivf_nprobe: int = Field(0, ge=0, description="IVF cells probed per query; 0 = nlist/32 (16..256). A Milvus "
                            "server honours it; Milvus Lite 2.5 ignores search-time nprobe")
    ivf_nlist: int = Field(0, ge=0, description="IVF cells of an IVF_FLAT index; 0 = about 4 sqrt(n)")
    duplicates_exact_max: int = Field(100_000, ge=0, description="'duplicates' compares every pair exactly up to "
                                      "this many vectors, then uses an IVF index (its recall is measured and shown)")
    # 16: on the benchmark, the easy edits' recall on both halves was the same as with 24 (12 lost 0.004 on the tune
    # half); 24 found one more 70% crop on the test half; 16 verified 30% fewer pairs (bench duplicates, 2026-12-08)
    duplicates_candidates: int = Field(16, ge=1, description="'duplicates' verifies each image against at most this "
                                       "many of its most similar images (by embedding), from the pixels")
    duplicates_candidate_floor: float = Field(0.5, gt=0, le=1, description="cosine below which two images are never "
                                              "candidates for verification")
    duplicates_nprobe: int = Field(0, ge=0, description="IVF cells probed per vector by the ANN duplicates path; "
                                   "0 = the fewest whose recall on the run's own sample of exact links is >= 0.99")

    # search service
    host: str = Field("127.0.0.1", description="address 'imgsearch serve' listens on")
    port: int = Field(8000, ge=1, le=65535)
    api_key: str = Field("", description="key for write routes (POST/DELETE /api/images); empty = writes disabled")
    protect_reads: bool = Field(False, description="also require the API key for read routes")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest accepted upload")
    data_dir: str = Field("", description="thumbnails and uploads; empty = next to the .db file (or ./imgsearch-data)")
    thumbnail_size: int = Field(256, ge=32, le=1024)
    serve_torch_threads: int = Field(1, ge=0, description="torch threads in the server (small batches: 1 is fastest "
                                     "on a 2-core machine); 0 = number of CPU cores")
    query_batch_max: int = Field(16, ge=1, le=256, description="queries embedded together by the service")
    query_batch_wait_ms: float = Field(2.0, ge=0, le=100, description="how long the service waits to fill a batch")


def usable_cpus() -> int:
    """The cores this process may run on: its affinity mask (taskset, cpusets of containers and YARN/Kubernetes
    executors), which os.cpu_count() ignores; what "0 = number of CPU cores" in the settings means."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgsearch"


def cache_dir_of(settings: Settings) -> Path:
    """Where exported models and measured choices are kept."""
    return Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


