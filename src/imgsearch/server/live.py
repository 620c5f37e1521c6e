"""Run `imgsearch serve` in a subprocess on a free loopback port, wait until healthy, stop it afterwards.

For integration tests and benchmarks: the server runs exactly as a user starts it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(db: Path | str, env: dict | None = None, timeout: float = 90, log_dir: Path | None = None):
    """`db` is a Milvus Lite file or a server URI; the server's log goes to `log_dir` (default: beside the file)."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    if log_dir is None:
        if "://" in str(db):
            raise ValueError("log_dir is needed when db is a server URI")
        log_dir = Path(db).parent
    log_path = Path(log_dir) / f"serve-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "imgsearch", "serve", "--db", str(db), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
