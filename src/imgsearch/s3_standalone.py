"""Run a real S3-compatible server on loopback for tests, benchmarks and local trials: moto's standalone server.

MinIO's server ships on none of the registries these machines reach (PyPI, Debian, npm); `moto[server]` (PyPI) is a
full S3 REST API (ListObjectsV2 paging, ranged GETs, multipart uploads, ETags) behind a real HTTP socket, so the
client code under test is exactly what talks to AWS or MinIO. Objects live in the server's memory. Its access log
(one line per request) is kept, so benchmarks can count requests per image.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: credentials the server accepts (it checks none); set them in the environment of the client under test
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "imgsearch-test", "AWS_SECRET_ACCESS_KEY": "imgsearch-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) /')


def executable() -> str | None:
    here = Path(sys.executable).parent / "moto_server"
    return str(here) if here.exists() else shutil.which("moto_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    log: Path
    pid: int = 0

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system): what it takes from a shared machine."""
        try:
            user, system = (int(v) for v in Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
        except (OSError, ValueError):
            return float("nan")
        return (user + system) / os.sysconf("SC_CLK_TCK")

    def requests(self) -> dict[str, int]:
        """Requests served so far, by HTTP method (from the server's access log)."""
        counts: dict[str, int] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            m = REQUEST.search(line)  # werkzeug colours some status lines: ANSI codes may precede the method
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts


@contextmanager
def s3_standalone(log_dir: Path, port: int = 0, timeout: float = 30) -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1; yield it; stop it afterwards."""
    exe = executable()
    if exe is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]'")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"moto-{port}.log"
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start in {timeout} s: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield S3Server(f"http://127.0.0.1:{port}", log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
