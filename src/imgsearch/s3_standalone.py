"""Run real object-storage servers on loopback for tests, benchmarks and local trials: moto's standalone S3 server,
gcp-storage-emulator's Google Cloud Storage server and Microsoft's Azurite blob server.

MinIO's server ships on none of the registries these machines reach (PyPI, Debian, npm); `moto[server]` (PyPI) is a
full S3 REST API (ListObjectsV2 paging, ranged GETs, multipart uploads, ETags) behind a real HTTP socket, so the
client code under test is exactly what talks to AWS or MinIO. Google's fake-gcs-server is a Go binary on no registry;
`gcp-storage-emulator` (PyPI) serves the GCS JSON API that pyarrow's GCS client (google-cloud-cpp) speaks. Azurite is
Microsoft's own emulator, from npm (`make test` installs it into the venv when npm exists). Objects live in the
servers' memory. moto's access log (one line per request) is kept, so benchmarks can count requests.
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
from typing import Callable, ContextManager, Iterator

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
def s3_standalone(log_dir: Path, port: int = 0, timeout: float = 30,
                  cpus: set[int] | None = None) -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 (on the cores `cpus` only, if given: benchmarks keep it off the model's
    cores, as a remote service would be); yield it; stop it afterwards."""
    exe = executable()
    if exe is None:
        raise RuntimeError("moto_server not found: pip install 'moto[server]'")
    port = port or free_port()
    with _serving([exe, "-H", "127.0.0.1", "-p", str(port)], port, log_dir / f"moto-{port}.log", timeout, cpus,
                  {"MOTO_ALLOW_NONEXISTENT_REGION": "true"}) as pid:
        yield S3Server(f"http://127.0.0.1:{port}", log_dir / f"moto-{port}.log", pid)


def gcs_executable() -> str | None:
    here = Path(sys.executable).parent / "gcp-storage-emulator"
    return str(here) if here.exists() else shutil.which("gcp-storage-emulator")


def gcs_standalone(log_dir: Path, port: int = 0, timeout: float = 30) -> ContextManager[S3Server]:
    """Start gcp-storage-emulator (in memory) on 127.0.0.1; yield it (clients: anonymous, endpoint override, http);
    stop it afterwards."""
    return _emulator("gcs", gcs_executable(), "pip install gcp-storage-emulator", log_dir, port, timeout,
                     lambda p: ["start", "--host=127.0.0.1", f"--port={p}", "--in-memory"])


#: Azurite's fixed development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_executable() -> str | None:
    here = Path(sys.executable).parents[1] / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(here) if here.exists() else shutil.which("azurite-blob")


def azurite_standalone(log_dir: Path, port: int = 0, timeout: float = 60) -> ContextManager[S3Server]:
    """Start Azurite's blob service (in memory) on 127.0.0.1; yield it (account AZURITE_ACCOUNT, key AZURITE_KEY);
    stop it afterwards."""
    return _emulator("azurite", azurite_executable(), "make azurite (npm install --prefix .venv/azurite azurite@3)",
                     log_dir, port, timeout,
                     lambda p: ["--blobHost", "127.0.0.1", "--blobPort", str(p), "--inMemoryPersistence",
                                "--skipApiVersionCheck", "--loose", "--disableTelemetry"])


@contextmanager
def _emulator(kind: str, exe: str | None, hint: str, log_dir: Path, port: int, timeout: float,
              args: Callable[[int], list[str]]) -> Iterator[S3Server]:
    if exe is None:
        raise RuntimeError(f"{kind} server not found: {hint}")
    port = port or free_port()
    log = log_dir / f"{kind}-{port}.log"
    with _serving([exe, *args(port)], port, log, timeout) as pid:
        yield S3Server(f"http://127.0.0.1:{port}", log, pid)


@contextmanager
def _serving(cmd: list[str], port: int, log: Path, timeout: float, cpus: set[int] | None = None,
             env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server command in its own session until its port answers; yield its pid; terminate it afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    name = Path(cmd[0]).name
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"{name} did not start in {timeout} s: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
