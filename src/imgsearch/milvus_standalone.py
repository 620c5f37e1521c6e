"""Run the PyPI package `milvus`'s standalone server (`milvus-server`) for tests, benchmarks and local trials.

It stands in for a Milvus standalone/distributed deployment reached by URI. Its components advertise 127.0.0.1 and
clients here connect only through loopback (the binary itself binds its ports on all interfaces; its embedded etcd
uses the fixed ports 2379/2380, so one runs per machine: a second start waits for the first to stop, on a lock file,
so parallel test workers and benchmarks take turns). It ignores SIGTERM for a long time: stop() sends SIGTERM to its
whole process group, waits, then SIGKILLs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def executable() -> str | None:
    here = Path(sys.executable).parent / "milvus-server"
    return str(here) if here.exists() else shutil.which("milvus-server")


LOCK = Path(tempfile.gettempdir()) / "imgsearch-locks" / "milvus-standalone.lock"


@contextmanager
def _one_per_machine(wait: float) -> Iterator[None]:
    """Hold the machine's milvus-server lock (waiting up to `wait` seconds for another holder to finish)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as fh:
        deadline = time.time() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"another milvus-server started here still runs after {wait:.0f} s ({LOCK})")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def milvus_standalone(data_dir: Path, port: int = 19530, timeout: float = 180, attempts: int = 3,
                      hang: float = 30, wait: float = 1800) -> Iterator[str]:
    """Start milvus-server with data in `data_dir`; yield its URI (http://127.0.0.1:PORT); stop it afterwards.

    It normally answers within 10 s, on a busy 2-core machine in a minute or more. Now and then a start hangs after
    its proxy registered (seen on a 2-core machine: nothing more logged, port never opened, for minutes) while the
    next start works: an attempt whose logs have not grown for `hang` seconds is stopped and tried again, and none
    waits more than `timeout` seconds. (A fixed 30 s per attempt once stopped three slow but live starts under load
    in a row.) A retry of a fresh server starts from an empty store: the hung attempt leaves sessions in its embedded
    etcd under which the next start comes up half-registered ("node not match") and refuses clients. One server runs
    per machine: a start waits up to `wait` seconds for one started before to stop.
    """
    exe = executable()
    if exe is None:
        raise RuntimeError("milvus-server not found: pip install 'milvus==2.3.5'")
    with _one_per_machine(wait):
        yield from _started(exe, data_dir, port, timeout, attempts, hang)


def _started(exe: str, data_dir: Path, port: int, timeout: float, attempts: int, hang: float) -> Iterator[str]:
    if _port_open(port) or _port_open(2379):
        raise RuntimeError(f"port {port} or 2379 is already in use: is another Milvus running?")
    data_dir.mkdir(parents=True, exist_ok=True)
    store = data_dir / "data"  # etcd, rocksmq and segments; bin/, configs/ and logs/ sit beside it
    fresh = not store.exists()
    # rootCoord's default port (53100) lies in Linux's ephemeral range, where any client socket may hold it and the
    # start then hangs; every port used here is outside that range.
    args = [exe, "--data", str(data_dir), "--proxy-port", str(port), "--root-coord-port", str(port + 3)]
    for comp in COMPONENTS:
        args += ["--extra-config", f"{comp}.ip=127.0.0.1"]
    proc = None
    for attempt in range(1, attempts + 1):
        log_path = data_dir / f"milvus-server-{attempt}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        logged, last_growth = -1, time.time()
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            if _port_open(port) and "Started:" in log_path.read_text(errors="replace"):
                break
            now = _logged_bytes(data_dir)
            if now != logged:
                logged, last_growth = now, time.time()
            elif time.time() - last_growth > hang:
                break  # silent: hung
            time.sleep(0.5)
        if proc.poll() is None and _port_open(port):
            break
        _stop(proc)
        if fresh:
            shutil.rmtree(store, ignore_errors=True)
        if attempt == attempts:
            raise RuntimeError(f"milvus-server did not start ({attempts} tries): {log_path.read_text()[-2000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _logged_bytes(data_dir: Path) -> int:
    """How much the server has written so far (its console log and the files in its logs/ folder)."""
    total = 0
    for f in [*data_dir.glob("milvus-server-*.log"), *(data_dir / "logs").glob("*")]:
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return total


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the milvus child may outlive its wrapper
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
