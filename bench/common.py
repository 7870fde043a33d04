"""Shared by the benchmarks: machine facts, process CPU, percentiles, RESULTS.md sections."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import signal
import subprocess
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`pid` and its live descendants (PostgreSQL's postmaster and its backends)."""
    children = children_map() if children is None else children
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every descendant, live or gone: each process's own
    user+system time plus that of the children it has reaped (cutime, cstime). A
    PostgreSQL backend that exits during a window moves from the live sum to the
    postmaster's reaped sum, so it is counted once, neither lost nor doubled."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            f = _stat_fields(p)
        except OSError:
            continue  # exited between the listing and this read; its parent reaps it
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / ticks


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """Resident (RSS) and proportional (PSS, shared pages split between their users) set
    size of these processes together, in KiB, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    for p in pids:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def calibration() -> float:
    """Milliseconds a fixed pure-Python loop takes here (best of five): machines of one
    kind differ about 2x, so results quote it and compare ratios, not absolute rates."""
    import time

    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - t)
    return best * 1000


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def record(title: str, body: str) -> None:
    """Replace (or append) the section `## title` of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\nRecorded {stamp} on {machine()}.\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text.rstrip() + "\n")


def stop_processes(procs: list[subprocess.Popen[bytes]], wait: float = 20) -> None:
    """SIGTERM each of a benchmark's processes, the last started first, then wait for each
    (killing one that outlives `wait` seconds)."""
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
