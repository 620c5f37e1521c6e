"""The milvus-server launcher's retry: a start that hangs is stopped, and the retry of a fresh server starts from an
empty store (a hung start's leftovers made the next one refuse clients). A stand-in executable plays the server."""

from __future__ import annotations

import socket
import sys
import textwrap

import pytest

from imgsearch import milvus_standalone as ms

FAKE = textwrap.dedent("""\
    import os, socket, sys, time
    args = sys.argv[1:]
    data, port = args[args.index("--data") + 1], int(args[args.index("--proxy-port") + 1])
    store = os.path.join(data, "data")
    tries = os.path.join(data, "tries")
    n = len(open(tries).read()) if os.path.exists(tries) else 0
    open(tries, "a").write("x")
    print("Started: now", flush=True)
    if n == 0:  # the first start hangs after writing state, as the real one sometimes does
        os.makedirs(os.path.join(store, "etcd.data"), exist_ok=True)
        time.sleep(600)
    if os.path.exists(os.path.join(store, "etcd.data")):
        sys.exit(3)  # a retry that sees the hung start's state: the real server comes up broken
    os.makedirs(store, exist_ok=True)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(); time.sleep(600)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hung_start_is_retried_on_a_fresh_store(tmp_path, monkeypatch):
    exe = tmp_path / "milvus-server"
    exe.write_text(f"#!{sys.executable}\n" + FAKE)
    exe.chmod(0o755)
    monkeypatch.setattr(ms, "executable", lambda: str(exe))
    monkeypatch.setattr(ms, "_port_open", lambda p, real=ms._port_open: real(port) if p == port else False)
    port = _free_port()
    data = tmp_path / "milvus-data"
    with ms.milvus_standalone(data, port=port, timeout=20, attempts=2, hang=3) as uri:
        assert uri == f"http://127.0.0.1:{port}"
        assert (data / "tries").read_text() == "xx"
        assert not (data / "data" / "etcd.data").exists()
    assert not ms._port_open(port)


def test_a_server_that_never_starts_is_a_clear_error(tmp_path, monkeypatch):
    exe = tmp_path / "milvus-server"
    exe.write_text(f"#!{sys.executable}\nimport sys; print('bad config', flush=True); sys.exit(1)\n")
    exe.chmod(0o755)
    monkeypatch.setattr(ms, "executable", lambda: str(exe))
    with pytest.raises(RuntimeError, match=r"did not start \(2 tries\).*bad config"):
        with ms.milvus_standalone(tmp_path / "d", port=_free_port(), timeout=5, attempts=2, hang=2):
            pass


def test_a_second_server_waits_for_the_first_to_stop(tmp_path, monkeypatch):
    """One milvus-server per machine (etcd's fixed ports): parallel test workers and benchmarks take turns."""
    monkeypatch.setattr(ms, "LOCK", tmp_path / "milvus.lock")
    with ms._one_per_machine(wait=5):
        with pytest.raises(RuntimeError, match="still runs after 1 s"):
            with ms._one_per_machine(wait=1):
                pass
    with ms._one_per_machine(wait=1):  # free again once the first stopped
        pass
