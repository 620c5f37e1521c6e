"""The Spark session: configured for image inference, on loopback for local masters, and stopped only by whoever
started it (a notebook's or spark-submit's own session is left running)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from imgsearch.errors import ImgSearchError
from imgsearch.models import ALLOCATOR_ENV


def in_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ  # set when spark-submit launched this Python driver


def is_local_master(master: str | None) -> bool:
    return not in_spark_submit() and (master or "local").startswith("local")


def active_session():
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def get_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "imgsearch"):
    """A SparkSession configured for image inference; under spark-submit, master and confs come from there."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ImgSearchError(f"the Spark engine needs pyspark: pip install 'imgsearch[spark]' ({exc})") from None
    # Workers must run this interpreter (with imgsearch and torch), and start with the tuned allocator.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    for k, v in ALLOCATOR_ENV.items():
        os.environ.setdefault(k, v)
    local = is_local_master(master)
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local and local-cluster: stay on loopback
    builder = SparkSession.builder.appName(app_name)
    if master or not in_spark_submit():
        builder = builder.master(master or "local[*]")
    defaults = {
        "spark.sql.session.timeZone": "UTC",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1" if local else "",
        "spark.driver.bindAddress": "127.0.0.1" if local else "",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
        # Image files are small next to Spark's 4 MB per-file open cost: without this a folder of small images
        # becomes one task per ~30 files, and task overheads dominate.
        "spark.sql.files.openCostInBytes": str(1024 * 1024),
        "spark.sql.files.maxPartitionBytes": str(64 * 1024 * 1024),
    }
    for k, v in ALLOCATOR_ENV.items():
        defaults[f"spark.executorEnv.{k}"] = v
    for k, v in {**defaults, **(conf or {})}.items():
        if v != "":
            builder = builder.config(k, v)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        # The JVM gateway sometimes exits at start (seen twice in ~6 Spark-heavy test runs here, right after other
        # JVMs were SIGKILLed; cause not found). One retry after a pause; a second failure is reported as it is.
        if "JAVA_GATEWAY_EXITED" not in str(exc):
            raise
        print("imgsearch: the Spark JVM exited at start; retrying once", file=sys.stderr)
        time.sleep(3)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def as_uri(path: str) -> str:
    """A Hadoop URI for a path or URI (local paths become file:// URIs)."""
    return path if "://" in path else Path(path).expanduser().resolve().as_uri()


def first_line(exc: Exception) -> str:
    """The first meaningful line of a Spark/JVM error (no stack frames)."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "JVM stacktrace", "---")):
            return line[:500]
    return type(exc).__name__
