"""Resident memory of this process and its high-water mark, from Linux's /proc (None elsewhere).

The high-water mark (VmHWM) can be reset to the current RSS (`reset_peak`, Linux 4.0+), so one phase's own peak is
read exactly: a model load, one test. Used by `python -m bench models`, its regression test and the test suite's
memory report."""

from __future__ import annotations

import os


def _status_mb(key: str, pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def total_mb() -> float | None:
    """The memory this process may use, MiB: the machine's, or its control group's limit where that is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text) / 2**20)
        break
    return total


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size now, MiB."""
    return _status_mb("VmRSS", pid)


def peak_mb(pid: int | str = "self") -> float | None:
    """The high-water mark of the resident set since start or the last `reset_peak`, MiB."""
    return _status_mb("VmHWM", pid)


def reset_peak() -> bool:
    """Reset this process's high-water mark to its current RSS; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_reset_works(probe_mb: int = 64) -> bool:
    """Whether `reset_peak` really lowers the high-water mark here (a kernel may accept the write and ignore it):
    touches `probe_mb` of anonymous memory, unmaps it, resets, and checks the mark came down. Resets the mark."""
    import mmap

    if not reset_peak():
        return False
    before = peak_mb()
    region = mmap.mmap(-1, probe_mb << 20)
    for off in range(0, probe_mb << 20, mmap.PAGESIZE):
        region[off] = 1
    raised = peak_mb()
    region.close()
    reset_peak()
    after = peak_mb()
    if before is None or raised is None or after is None:
        return False
    return raised - before > probe_mb / 2 and raised - after > probe_mb / 2


def pss_mb(pid: int | str = "self") -> float | None:
    """Proportional set size now, MiB: resident pages, each shared page divided among the processes sharing it (so
    forked workers' copy-on-write pages are not counted once per worker). Falls back to RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss_mb(pid)


def tree_pss_mb(pid: int) -> float:
    """PSS of a process and all its descendants now, MiB: what the tree holds of the machine's memory."""
    total = 0.0
    seen: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += pss_mb(p) or 0.0
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return total
