"""Uptime Kuma as bench/e2e.py's peer (`--peer kuma`): the same workload on Kuma, counted
the same way.

Kuma is not part of this repository and is never fetched by it: the bench runs the release
checked out at $PROBEFLEET_KUMA_DIR (see `PROVIDE` for the steps). One run: a fresh data
dir on SQLite, the bench's keep-alive target in its own process (not counted), `node
server/server.js`, N HTTP monitors at the interval added through Kuma's own socket.io API
(bench/kuma_seed.js: `setup`, `login`, `add`; the client then disconnects, so no UI session
costs anything while measuring), a warm-up until every monitor has beaten within one
interval, then the windows. CPU is bench.common.tree_cpu of the node process (every
descendant, live or reaped, counted), memory is RSS and PSS of its whole tree, as for
probefleet's components. Checks are Kuma's `heartbeat` rows timed in each window, read from
its SQLite file; due is monitors x window / interval (Kuma schedules each monitor's next
beat one interval after the previous one started, one location), so missing is due minus
heartbeats. Kuma has no due time per check: its jitter is the gap between consecutive beats
of one monitor minus the interval.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from bench.common import children_map, memory_kib, percentile, process_tree, stop_processes, tree_cpu
from probefleet.shared import devstack

ENV = "PROBEFLEET_KUMA_DIR"
SEED = Path(__file__).with_name("kuma_seed.js")
TIMEOUT_S = 5  # probefleet's bench monitors' timeout_s
PROVIDE = f"""\
Set {ENV} to a checkout of an Uptime Kuma release with its server dependencies installed,
outside this repository, for example:

  mkdir -p /var/tmp/kuma
  git -C <a clone of github.com/louislam/uptime-kuma> archive 2.5.3 | tar -x -C /var/tmp/kuma
  cd /var/tmp/kuma && npm ci --omit dev --no-audit
  mkdir -p dist && echo '<!doctype html>' > dist/index.html
  export {ENV}=/var/tmp/kuma

Node 20 or newer. If GitHub is out of reach, npm builds the SQLite driver from source
(gcc, make and python3 needed) instead of downloading its prebuilt binary. The UI bundle
(`npm run download-dist`) is not needed to check monitors, but the server exits without
a dist/index.html: a placeholder does. The bench never writes into that folder; each run
gets a fresh data dir of its own."""


def kuma_dir() -> Path:
    """The checkout named by $PROBEFLEET_KUMA_DIR, checked before any run starts."""
    value = os.environ.get(ENV)
    if not value:
        raise click.UsageError(f"--peer kuma needs Uptime Kuma on this machine.\n{PROVIDE}")
    root = Path(value)
    needed = [
        "server/server.js",
        "node_modules/socket.io-client",
        "node_modules/@louislam/sqlite3",
        "dist/index.html",
    ]
    missing = [p for p in needed if not (root / p).exists()]
    if missing:
        raise click.UsageError(f"{ENV}={value} lacks {', '.join(missing)}.\n{PROVIDE}")
    return root


def version(root: Path) -> str:
    return str(json.loads((root / "package.json").read_text())["version"])


def _stamp(t: float) -> str:
    """Kuma's heartbeat time format (UTC, milliseconds), which sorts as text."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _beats(db: Path, start: float, end: float) -> list[tuple[int, str, int]]:
    """(monitor, time, status) of every heartbeat timed in [start, end)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT monitor_id, time, status FROM heartbeat WHERE time >= ? AND time < ?"
            " ORDER BY monitor_id, time",
            (_stamp(start), _stamp(end)),
        ).fetchall()
    finally:
        conn.close()
    return [(int(m), str(t), int(s)) for m, t, s in rows]


def _seconds(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()


def _gaps(beats: list[tuple[int, str, int]], interval: int) -> list[float]:
    """Each beat's gap after the previous beat of its monitor, minus the interval."""
    out = []
    for (m0, t0, _), (m1, t1, _) in itertools.pairwise(beats):
        if m0 == m1:
            out.append(_seconds(t1) - _seconds(t0) - interval)
    return out


def _wait(what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path, done: Any) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise RuntimeError(f"Kuma exited ({proc.returncode}) while {what}; its log: {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kuma: timed out after {timeout:.0f} s {what}; its log: {log}")
        time.sleep(1)


def run(n: int, interval: int, window: float, windows: int, workdir: Path, root: Path) -> dict[str, Any]:
    """One side-by-side run of Kuma; the result has the shape of bench.e2e.run_one's."""
    data = workdir / f"kuma-{n}" / "data"
    data.mkdir(parents=True)
    # Kuma 2 asks for its database type on first start unless this file names it.
    (data / "db-config.json").write_text('{"type": "sqlite"}\n')
    log = data.parent / "kuma.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        target_port, port = devstack.free_port(), devstack.free_port()
        target = subprocess.Popen(
            [sys.executable, "-m", "bench.target", str(target_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(target)
        env = {
            **os.environ,
            "NODE_ENV": "production",
            "DATA_DIR": str(data),
            "UPTIME_KUMA_HOST": "127.0.0.1",
            "UPTIME_KUMA_PORT": str(port),
        }
        with log.open("wb") as out:
            kuma = subprocess.Popen(
                ["node", "server/server.js"],
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        procs.append(kuma)
        t = time.monotonic()
        seed = subprocess.run(
            [
                "node",
                str(SEED),
                f"http://127.0.0.1:{port}",
                str(n),
                str(interval),
                f"http://127.0.0.1:{target_port}/",
                str(TIMEOUT_S),
            ],
            env={**env, "KUMA_DIR": str(root)},
            capture_output=True,
            text=True,
            check=False,
            timeout=180 + n * 0.2,
        )
        if seed.returncode != 0:
            raise RuntimeError(f"seeding Kuma failed: {seed.stderr.strip()}; its log: {log}")
        click.echo(f"kuma {version(root)}: {n} monitors added in {time.monotonic() - t:.1f} s")
        db = data / "kuma.db"

        def all_beating() -> bool:
            now = time.time()
            return len({m for m, _, _ in _beats(db, now - interval, now)}) >= n

        # Warm-up as e2e's: one interval, then every monitor has beaten within the last one.
        time.sleep(interval + 5)
        _wait("warming up", interval + 120, kuma, log, all_beating)
        per_window = []
        cpu0, t0 = tree_cpu(kuma.pid), time.time()
        for _ in range(windows):
            time.sleep(window)
            cpu1, t1 = tree_cpu(kuma.pid), time.time()
            per_window.append((t0, t1, cpu1 - cpu0))
            cpu0, t0 = cpu1, t1
        tree = process_tree(kuma.pid, children_map())
        mem = {"kuma": memory_kib(tree)}
        time.sleep(TIMEOUT_S + 3)  # a beat started in a window is stored when it finishes
        rows = []
        for a, b, cpu in per_window:
            beats = _beats(db, a, b)
            due = round(n * (b - a) / interval)
            rows.append(
                {
                    "window": b - a,
                    "achieved": len(beats) / (b - a),
                    "due": due,
                    "missing": due - len(beats),
                    "not_up": sum(1 for _, _, s in beats if s != 1),
                    "jitter_p99_ms": percentile(_gaps(beats, interval), 0.99) * 1000,
                    "cpu": {"kuma": cpu},
                    "cpu_per_1000": cpu / max(len(beats), 1) * 1000,
                    "checks": len(beats),
                }
            )
        return {
            "code": f"Uptime Kuma {version(root)}",
            "monitors": n,
            "interval": interval,
            "durable": None,
            "nats": "-",
            "regions": 1,
            "configured": n / interval,
            "windows": rows,
            "memory_kib": mem,
            "processes": len(tree),
        }
    finally:
        stop_processes(procs)


def reading(results: list[dict[str, Any]]) -> str:
    """The paragraph that explains Kuma's rows in bench/RESULTS.md."""
    ours = [r for r in results if r.get("regions") == 1]
    not_up = sum(w["not_up"] for r in ours for w in r["windows"])
    return (
        "Uptime Kuma, side by side in the same run: a release from $PROBEFLEET_KUMA_DIR (never in\n"
        'this repository; how to provide it: docs/architecture/scale.md, "Side by side with Uptime\n'
        'Kuma"), one location, SQLite in its process (WAL, synchronous NORMAL: not durable per\n'
        "commit), a fresh data dir, the same monitors at the same interval and timeout against its\n"
        "own keep-alive target of the same kind (not counted), added through its socket.io API and\n"
        "then left with no UI connected. Kuma makes a new HTTP agent for every check, so it opens a\n"
        "connection per check where probefleet's probes reuse theirs. CPU and memory are those of\n"
        "the node process and every descendant, as above. Its checks are its heartbeat rows timed\n"
        "in the window; due is monitors x window / interval; its jitter is the gap between two\n"
        "beats of a monitor minus the interval (it has no due time). One location means a monitor\n"
        "round is one check: its per-1,000-rounds figure equals its per-check one.\n"
        f"Kuma's heartbeats that were not up in the windows: {not_up}.\n\n"
    )
