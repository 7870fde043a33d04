"""bench.e2e's profile mode: where the CPU of the whole system goes, per 1,000 checks.

Not a benchmark (sampling and statement tracking cost CPU themselves). Over the measured
windows it gathers:

- py-spy samples of the controller and every probe (`PROBEFLEET_PYSPY`, else `py-spy` on
  PATH or beside the interpreter; it is not a dependency: `pip install --target /tmp/pyspy
  py-spy` and `PROBEFLEET_PYSPY=/tmp/pyspy/bin/py-spy`), summed as CPU seconds by the
  function running (self) and by the innermost frame of our own code (who asked for it);
- PostgreSQL: pg_stat_statements (calls, rows, execution ms per statement), commits,
  tuples written, WAL records and bytes, per-table inserts, updates and vacuums;
- NATS: /varz messages and bytes in and out, JetStream API calls, and /connz per
  connection (each probe's and the controller's messages);
- wakeups: context switches per second of each component, the cost of idle loops (run it
  with `--monitors 0` to see the idle system).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import memory_kib, process_tree
from probefleet.shared.devstack import NatsServer

# Settings the profile adds to PostgreSQL: statement statistics need the library loaded
# at start.
PG_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "track_io_timing": "on",
}
SAMPLE_RATE = 50  # py-spy samples per second: enough for a minute's profile, cheap to take
# py-spy names a frame's file by its import path: ours are the package's folders.
OURS = ("controller/", "probe/", "shared/", "probefleet/", str(Path(__file__).resolve().parents[1]))


def pyspy() -> str | None:
    found = os.environ.get("PROBEFLEET_PYSPY") or shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else None


# ---------------------------------------------------------------- PostgreSQL


async def _pg_reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        await conn.execute("SELECT pg_stat_reset()")
        await conn.execute("SELECT pg_stat_reset_shared('wal')")
        await conn.execute("SELECT pg_stat_reset_shared('bgwriter')")
    finally:
        await conn.close()


async def _pg_read(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        statements = await conn.fetch(
            "SELECT calls, rows, total_exec_time AS ms, shared_blks_hit + shared_blks_read AS blocks,"
            " query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE"
            " datname = current_database()) AND query NOT LIKE '%pg_stat%'"
            " ORDER BY total_exec_time DESC"
        )
        database = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched,"
            " tup_returned, blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()"
        )
        wal = await conn.fetchrow("SELECT * FROM pg_stat_wal")  # wal_sync moved to pg_stat_io in 18
        tables = await conn.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, seq_tup_read,"
            " vacuum_count + autovacuum_count AS vacuums, analyze_count + autoanalyze_count AS analyzes"
            " FROM pg_stat_user_tables ORDER BY n_tup_ins + n_tup_upd + n_tup_del + seq_tup_read DESC"
            " LIMIT 12"
        )
    finally:
        await conn.close()
    return {
        "statements": [dict(r) for r in statements],
        "database": dict(database) if database else {},
        "wal": dict(wal) if wal else {},
        "tables": [dict(r) for r in tables],
    }


# ---------------------------------------------------------------- NATS


def monitoring_url(nats: NatsServer) -> str | None:
    assert nats.proc is not None
    ports = nats.data_dir / "ports" / f"nats-server_{nats.proc.pid}.ports"
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        return str(json.loads(ports.read_text())["monitoring"][0])
    return None


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        data: dict[str, Any] = json.load(r)
    return data


def _nats_read(base: str) -> dict[str, Any]:
    varz = _get(f"{base}/varz")
    connz = _get(f"{base}/connz?limit=1024")
    api = (varz.get("jetstream") or {}).get("stats", {}).get("api", {})
    return {
        "in_msgs": varz["in_msgs"],
        "out_msgs": varz["out_msgs"],
        "in_bytes": varz["in_bytes"],
        "out_bytes": varz["out_bytes"],
        "js_api": api.get("total", 0),
        "conns": {c["cid"]: (c.get("name", "?"), c["in_msgs"], c["out_msgs"]) for c in connz["connections"]},
    }


# ---------------------------------------------------------------- processes


def _switches(pids: list[int]) -> int:
    """Voluntary and involuntary context switches of these processes and their live children."""
    total = 0
    for root in pids:
        for p in process_tree(root):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
    return total


def _process_memory(pid: int) -> tuple[str, int, int]:
    """(name, RSS KiB, PSS KiB): PostgreSQL names its processes in their command line."""
    try:
        name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        name = "?"
    name = name.removeprefix("postgres: ").split("/")[-1][:40] or str(pid)
    return (name, *memory_kib([pid]))


def _collapse(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    return stacks


def _frame(frame: str) -> str:
    """'fn (path/to/file.py:12)' -> 'fn (file.py)', the line dropped so a function sums."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({file.replace(OURS[-1] + '/', '')})"


def _ours(frame: str) -> bool:
    file = frame.partition(" (")[2]
    return file.startswith(OURS) and "site-packages" not in file


def _views(stacks: Counter[str]) -> tuple[Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        own[_frame(frames[-1])] += count
        mine = next((f for f in reversed(frames) if _ours(f)), "(none of ours: the event loop)")
        ours[_frame(mine)] += count
    return own, ours


@dataclass
class Snapshot:
    folder: Path
    seconds: float
    pg0: dict[str, Any]
    pg1: dict[str, Any]
    nats0: dict[str, Any] | None
    nats1: dict[str, Any] | None
    switches: dict[str, float]
    memory: dict[str, list[tuple[str, int, int]]]
    spied: dict[str, list[Path]] = field(default_factory=dict)

    def report(self, checks: int, cpu: list[dict[str, float]]) -> str:
        # An idle system (no monitors) is reported per second instead.
        per, unit = (1000 / checks, "per 1,000 checks") if checks else (1 / self.seconds, "per second (idle)")
        out = [f"\n=== profile: {checks:,} checks in {self.seconds:.0f} s; figures {unit} ==="]
        total = {k: sum(c[k] for c in cpu) for k in cpu[0]} if cpu else {}
        out.append(
            "CPU s: "
            + ", ".join(f"{k} {v * per:.3f}" for k, v in total.items())
            + f" (all {sum(total.values()) * per:.3f})"
        )
        out.append(
            "wakeups (context switches) per second: "
            + ", ".join(f"{k} {v:.0f}" for k, v in self.switches.items())
        )
        out.append("memory per process, RSS (PSS) MiB:")
        for component, rows in self.memory.items():
            out.append(
                f"  {component}: " + ", ".join(f"{n} {r / 1024:.0f} ({p / 1024:.0f})" for n, r, p in rows)
            )
        out += self._pg(per)
        out += self._nats(per)
        out += self._python(per)
        return "\n".join(out)

    def _pg(self, per: float) -> list[str]:
        d0, d1 = self.pg0["database"], self.pg1["database"]
        w0, w1 = self.pg0["wal"], self.pg1["wal"]
        lines = ["-- PostgreSQL"]
        lines.append(
            "commits {:.0f}, rows inserted {:.0f}, updated {:.0f}, deleted {:.0f}, fetched {:.0f}, returned"
            " {:.0f}, WAL records {:.0f}, WAL full pages {:.0f}, WAL KiB {:.1f}, WAL syncs {:.0f}".format(
                (d1["xact_commit"] - d0.get("xact_commit", 0)) * per,
                (d1["tup_inserted"] - d0.get("tup_inserted", 0)) * per,
                (d1["tup_updated"] - d0.get("tup_updated", 0)) * per,
                (d1["tup_deleted"] - d0.get("tup_deleted", 0)) * per,
                (d1["tup_fetched"] - d0.get("tup_fetched", 0)) * per,
                (d1["tup_returned"] - d0.get("tup_returned", 0)) * per,
                (w1["wal_records"] - w0.get("wal_records", 0)) * per,
                (w1["wal_fpi"] - w0.get("wal_fpi", 0)) * per,
                float(w1["wal_bytes"] - w0.get("wal_bytes", 0)) * per / 1024,
                (w1.get("wal_sync", 0) - w0.get("wal_sync", 0)) * per,
            )
        )
        calls = sum(s["calls"] for s in self.pg1["statements"])
        ms = sum(s["ms"] for s in self.pg1["statements"])
        lines.append(f"statements {calls * per:.0f}, executing {ms * per:.0f} ms; the top ones:")
        lines.append("    calls     rows       ms   blocks  query")
        for s in self.pg1["statements"][:15]:
            query = " ".join(s["query"].split())[:140]
            lines.append(
                f"  {s['calls'] * per:7.1f} {s['rows'] * per:8.1f} {s['ms'] * per:8.1f}"
                f" {s['blocks'] * per:8.0f}  {query}"
            )
        lines.append("  ... the most buffer pages read:")
        for s in sorted(self.pg1["statements"], key=lambda s: -s["blocks"])[:5]:
            query = " ".join(s["query"].split())[:140]
            lines.append(
                f"  {s['calls'] * per:7.1f} {s['rows'] * per:8.1f} {s['ms'] * per:8.1f}"
                f" {s['blocks'] * per:8.0f}  {query}"
            )
        lines.append("tables: inserted / updated (HOT) / deleted / rows read by seq scans / vacuums+analyzes")
        for t in self.pg1["tables"]:
            lines.append(
                f"  {t['relname']}: {t['n_tup_ins'] * per:.0f} / {t['n_tup_upd'] * per:.0f}"
                f" ({t['n_tup_hot_upd'] * per:.0f}) / {t['n_tup_del'] * per:.0f}"
                f" / {t['seq_tup_read'] * per:.0f} / {t['vacuums']}+{t['analyzes']}a"
            )
        return lines

    def _nats(self, per: float) -> list[str]:
        if self.nats0 is None or self.nats1 is None:
            return ["-- NATS: no monitoring port"]
        a, b = self.nats0, self.nats1
        lines = [
            "-- NATS",
            f"messages in {(b['in_msgs'] - a['in_msgs']) * per:.0f},"
            f" out {(b['out_msgs'] - a['out_msgs']) * per:.0f},"
            f" KiB in {(b['in_bytes'] - a['in_bytes']) * per / 1024:.1f},"
            f" out {(b['out_bytes'] - a['out_bytes']) * per / 1024:.1f},"
            f" JetStream API calls {(b['js_api'] - a['js_api']) * per:.0f}",
            "per connection (messages from it / to it):",
        ]
        for cid, (name, i1, o1) in sorted(b["conns"].items(), key=lambda kv: str(kv[1][0])):
            _, i0, o0 = a["conns"].get(cid, (name, 0, 0))
            lines.append(f"  {name}: {(i1 - i0) * per:.0f} / {(o1 - o0) * per:.0f}")
        return lines

    def _python(self, per: float) -> list[str]:
        if not self.spied:
            return ["-- Python: py-spy not found (PROBEFLEET_PYSPY or PATH); no samples"]
        lines = [f"-- Python (py-spy, {SAMPLE_RATE} samples/s; raw stacks in {self.folder})"]
        for component, files in self.spied.items():
            stacks: Counter[str] = Counter()
            for f in files:
                stacks.update(_collapse(f))
            own, ours = _views(stacks)
            seconds = sum(stacks.values()) / SAMPLE_RATE
            # py-spy cannot tell a thread waiting in uvloop's C loop from one working there:
            # the loop's own frame (run_app, Runner.run) holds that time, so the samples add
            # up to more than the CPU measured; read the shares, not the sum.
            lines.append(
                f"{component}: {seconds * per:.3f} s of samples (waits in the C loop included); self:"
            )
            lines += [f"  {n / SAMPLE_RATE * per:7.4f}  {name}" for name, n in own.most_common(15)]
            lines.append(f"{component}: by the innermost frame of our code:")
            lines += [f"  {n / SAMPLE_RATE * per:7.4f}  {name}" for name, n in ours.most_common(15)]
        return lines


@dataclass
class Session:
    """One profile across the measured windows: `begin` resets and starts the samplers,
    `end` reads every counter and waits for the samplers."""

    folder: Path
    dsn: str
    nats_url: str | None
    roots: dict[str, list[int]]
    started: float
    pg0: dict[str, Any]
    nats0: dict[str, Any] | None
    switches0: dict[str, int]
    spies: dict[str, list[tuple[subprocess.Popen[bytes], Path]]]

    @classmethod
    def begin(
        cls,
        folder: Path,
        dsn: str,
        nats: NatsServer,
        roots: dict[str, list[int]],
        python: dict[str, list[int]],
        seconds: float,
    ) -> Session:
        folder.mkdir(parents=True, exist_ok=True)
        asyncio.run(_pg_reset(dsn))
        spy = pyspy()
        if spy is None:
            print("py-spy not found (PROBEFLEET_PYSPY or PATH): no Python samples", file=sys.stderr)
        spies: dict[str, list[tuple[subprocess.Popen[bytes], Path]]] = {}
        for component, pids in python.items():
            for pid in pids if spy is not None else []:
                out = folder / f"{component}-{pid}.txt"
                cmd: list[str] = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
                cmd += ["--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(out), "--nonblocking"]
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                spies.setdefault(component, []).append((proc, out))
        url = monitoring_url(nats)
        return cls(
            folder=folder,
            dsn=dsn,
            nats_url=url,
            roots=roots,
            started=time.monotonic(),
            pg0=asyncio.run(_pg_read(dsn)),
            nats0=_nats_read(url) if url else None,
            switches0={k: _switches(v) for k, v in roots.items()},
            spies=spies,
        )

    def end(self) -> Snapshot:
        seconds = time.monotonic() - self.started
        switches = {k: (_switches(v) - self.switches0[k]) / seconds for k, v in self.roots.items()}
        nats1 = _nats_read(self.nats_url) if self.nats_url else None
        pg1 = asyncio.run(_pg_read(self.dsn))
        spied: dict[str, list[Path]] = {}
        for component, runs in self.spies.items():
            for proc, out in runs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                spied.setdefault(component, []).append(out)
        memory = {
            k: [_process_memory(p) for root in v for p in process_tree(root)] for k, v in self.roots.items()
        }
        return Snapshot(self.folder, seconds, self.pg0, pg1, self.nats0, nats1, switches, memory, spied)
