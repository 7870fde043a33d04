"""End-to-end benchmark: N http monitors in three regions against a local keep-alive target.

Runs the real system as separate processes (embedded NATS and PostgreSQL, one controller,
three probes on 127.0.0.11-13, a target), lets it warm up for one interval, then measures
`--windows` consecutive windows: achieved versus configured checks per second, missing
checks, schedule jitter and CPU seconds per 1,000 checks of every process of the system
(controller, probes, nats-server, PostgreSQL with all its backends), split by component,
and the memory (RSS and PSS) of them all. `--fsync both` runs with PostgreSQL durable and
not, one after the other; `--nats both` runs with NATS plain (no TLS, no authentication)
and as the fleet runs it (operator mode, TLS, a credential per probe), side by side.

`--peer kuma` adds, for each monitor count, a run of Uptime Kuma with the same workload
(the same monitors at the same interval against the same keep-alive target, one location,
SQLite in its process) counted the same way: CPU of the node process and every descendant
over the same windows, RSS and PSS of its tree, its heartbeats as checks (bench/kuma.py).
Kuma is never part of this repository: the run takes a release checked out and installed
outside it from $PROBEFLEET_KUMA_DIR, and says how to provide one when that is unset
(bench/kuma.py's PROVIDE; docs/architecture/scale.md).

    python -m bench.e2e --monitors 1000 --interval 20 --fsync both
    PROBEFLEET_KUMA_DIR=/var/tmp/kuma python -m bench.e2e --monitors 1000 --interval 20 --peer kuma
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import click

from bench import fleet as fleet_bench
from bench import kuma as kuma_peer
from bench import profiling as prof
from bench.common import (
    calibration,
    children_map,
    load_average,
    memory_kib,
    percentile,
    process_tree,
    record,
    stop_processes,
    tree_cpu,
)
from probefleet.controller.engine.scheduler import phase
from probefleet.shared import devstack

REGIONS = {"us-east": "127.0.0.11", "eu-west": "127.0.0.12", "ap-south": "127.0.0.13"}


ROOT = Path(__file__).resolve().parent.parent


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _rev(ref: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise click.BadParameter(f"{ref!r} is not a git revision of {ROOT}", param_hint="--compare")
    return out.stdout.strip()


@contextlib.contextmanager
def checkout(ref: str, workdir: Path) -> Any:
    """The package `probefleet` as it was at `ref`: a detached worktree and a folder to put
    first on PYTHONPATH whose `probefleet/` maps controller/, probe/ and shared/ like the
    wheel does (the namespace package is found there before the editable install)."""
    tree = workdir / f"code-{ref}"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", "--quiet", str(tree), ref], check=True)
    shim = workdir / f"path-{ref}"
    (shim / "probefleet").mkdir(parents=True)
    for part in ("controller", "probe", "shared"):
        (shim / "probefleet" / part).symlink_to(tree / part)
    try:
        yield shim
    finally:
        subprocess.run([*git, "remove", "--force", str(tree)], check=False)


def _seed_with(pythonpath: Path | None, dsn: str, n: int, interval: int, url: str) -> None:
    """Migrate and seed with the code under test (its own migrations)."""
    if pythonpath is None:
        asyncio.run(_seed(dsn, n, interval, url))
        return
    code = f"import asyncio, bench.e2e as e; asyncio.run(e._seed({dsn!r}, {n}, {interval}, {url!r}))"
    subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(pythonpath)}, cwd=ROOT, check=True
    )


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


async def _seed(dsn: str, n: int, interval: int, url: str) -> None:
    from probefleet.controller.storage import db

    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE monitors, rounds, check_results CASCADE")
        spec = '{"type": "http", "url": "%s"}' % url  # noqa: UP031 - SQL literal built once
        await conn.execute(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            " SELECT 'bench-' || g, 'http', $1::jsonb, $2, 5, $3 FROM generate_series(1, $4) g",
            spec,
            interval,
            list(REGIONS),
            n,
        )
    finally:
        await conn.close()


async def _measure(dsn: str, start: float, end: float, interval: int) -> tuple[int, list[float], int]:
    """Results of first attempts due in [start, end), their lags, and how many checks were
    due then (every monitor's phase grid, times the regions): the difference is lost checks."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM started_at - due) AS lag FROM check_results"
            " WHERE due >= to_timestamp($1) AND due < to_timestamp($2) AND attempt = 0",
            start,
            end,
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM monitors WHERE enabled")]
    finally:
        await conn.close()
    due = 0
    for monitor_id in ids:
        offset = phase(monitor_id, interval)
        # grid points offset + k * interval inside [start, end)
        due += math.ceil((end - offset) / interval) - math.ceil((start - offset) / interval)
    return len(rows), [float(r["lag"]) for r in rows], due * len(REGIONS)


COMPONENTS = ("controller", "probes", "nats", "postgres")


def _cpu(roots: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(tree_cpu(pid) for pid in pids) for name, pids in roots.items()}


def run_one(
    n: int,
    interval: int,
    window: float,
    windows: int,
    workdir: Path,
    *,
    durable: bool = False,
    secure: bool = False,
    profile: Path | None = None,
    pg_settings: dict[str, str] | None = None,
    controller_settings: dict[str, str] | None = None,
    code: tuple[str, Path | None] = ("HEAD", None),
) -> dict[str, Any]:
    """One configuration; `code` is (its label, the PYTHONPATH folder of `checkout`, or
    None for the working tree)."""
    label, pythonpath = code
    name = f"{n}-{int(durable)}-{int(secure)}-{label}"
    stack = devstack.EmbeddedStack(workdir / f"stack-{name}", ephemeral=True)
    # The fleet's secure NATS: operator mode and TLS, the controller's and each probe's own credential.
    sec = fleet_bench.secure_nats(stack, workdir / f"trust-{name}") if secure else None
    stack.postgres.durable = durable
    stack.postgres.settings = {**(prof.PG_SETTINGS if profile is not None else {}), **(pg_settings or {})}
    stack.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if sec is not None:
            sec.nats_url = stack.nats.url
        asyncio.run(devstack.create_database(stack.postgres.dsn(), "bench", drop=True))
        dsn = stack.postgres.dsn("bench")
        target_port = devstack.free_port()
        procs.append(_spawn(["-m", "bench.target", str(target_port)], dict(os.environ)))
        target = f"http://127.0.0.1:{target_port}/"
        _seed_with(pythonpath, dsn, n, interval, target)
        env = {
            **os.environ,
            **({"PYTHONPATH": str(pythonpath)} if pythonpath is not None else {}),
            "PROBEFLEET_DATABASE_URL": dsn,
            "PROBEFLEET_NATS_URL": stack.nats.url,
            "PROBEFLEET_LOG_LEVEL": "WARNING",
            "PROBEFLEET_NATS_INSECURE": "1",
        }
        if sec is not None:
            env = {**fleet_bench.clean_env(), **env, **sec.controller_env()}
            del env["PROBEFLEET_NATS_INSECURE"]
        api_port = devstack.free_port()
        serve = ["-m", "probefleet.shared.cli", "controller", "serve", "--port", str(api_port)]
        if controller_settings:
            # TOML literals as given (db_pool_max=5, round_grace=1.0).
            conf = workdir / f"controller-{name}.toml"
            conf.write_text("".join(f"{k} = {v}\n" for k, v in controller_settings.items()))
            serve += ["--config", str(conf)]
        controller = _spawn(serve, env)
        run = ["-m", "probefleet.shared.cli", "probe", "run"]
        probes = [
            _spawn(
                [*run, "--region", r, "--source-address", a, "--probe-id", f"bench-{r}"],
                env if sec is None else {**env, **sec.probe_env(r, f"bench-{r}")},
            )
            for r, a in REGIONS.items()
        ]
        procs += [controller, *probes]
        _wait_http(f"http://127.0.0.1:{api_port}/api/v1/health")
        time.sleep(interval + 5)  # warm-up: every monitor has fired once
        assert stack.nats.proc is not None and stack.postgres.proc is not None
        # Every process of the system: the controller, the probes, nats-server, and
        # PostgreSQL's postmaster with all its backends and helpers (live or reaped).
        roots = {
            "controller": [controller.pid],
            "probes": [p.pid for p in probes],
            "nats": [stack.nats.proc.pid],
            "postgres": [stack.postgres.proc.pid],
        }
        session = None
        if profile is not None:
            python = {"controller": [controller.pid], "probes": [p.pid for p in probes]}
            session = prof.Session.begin(profile / name, dsn, stack.nats, roots, python, window * windows)
        per_window = []
        cpu0, t0 = _cpu(roots), time.time()
        for _ in range(windows):
            time.sleep(window)
            cpu1, t1 = _cpu(roots), time.time()
            per_window.append((t0, t1, {k: cpu1[k] - cpu0[k] for k in cpu1}))
            cpu0, t0 = cpu1, t1
        children = children_map()
        mem = {
            name: memory_kib([q for pid in pids for q in process_tree(pid, children)])
            for name, pids in roots.items()
        }
        nprocs = sum(len(process_tree(pid, children)) for pids in roots.values() for pid in pids)
        snapshot = session.end() if session is not None else None
        time.sleep(8)  # let the last window's results land
        rows = []
        per_window_checks = []
        for a, b, cpu in per_window:
            checks, lags, due = asyncio.run(_measure(dsn, a, b, interval))
            per_window_checks.append((a, b, cpu, checks))
            rows.append(
                {
                    "window": b - a,
                    "achieved": checks / (b - a),
                    "due": due,
                    "missing": due - checks,
                    "jitter_p99_ms": percentile(lags, 0.99) * 1000,
                    "cpu": cpu,
                    "cpu_per_1000": sum(cpu.values()) / max(checks, 1) * 1000,
                    "checks": checks,
                }
            )
        if snapshot is not None:
            print(snapshot.report(sum(w[3] for w in per_window_checks), [w[2] for w in per_window]))
        return {
            "code": label,
            "monitors": n,
            "interval": interval,
            "durable": durable,
            "nats": "secure" if secure else "plain",
            "configured": n * len(REGIONS) / interval,
            "windows": rows,
            "memory_kib": mem,
            "processes": nprocs,
        }
    finally:
        stop_processes(procs)
        stack.stop()


def _fsync(r: dict[str, Any]) -> str:
    if r["durable"] is None:  # a peer on its own storage
        return "SQLite WAL, synchronous NORMAL"
    return "on" if r["durable"] else "off"


def _summary(r: dict[str, Any]) -> str:
    ws = r["windows"]
    per = sorted(w["cpu_per_1000"] for w in ws)
    med = per[len(per) // 2]
    checks = sum(w["checks"] for w in ws)
    split = {k: sum(w["cpu"][k] for w in ws) / max(checks, 1) * 1000 for k in ws[0]["cpu"]}
    # nan when a window holds no two beats of one monitor (a peer's jitter needs a gap)
    lags = [w["jitter_p99_ms"] for w in ws if not math.isnan(w["jitter_p99_ms"])]
    jitter = f"{max(lags):.0f} ms" if lags else "-"
    if set(split) == set(COMPONENTS):
        parts = " / ".join(f"{split[k]:.2f}" for k in COMPONENTS)
    else:  # a peer: its own parts, named
        parts = ", ".join(f"{k} {v:.2f}" for k, v in split.items())
    rss = sum(v[0] for v in r["memory_kib"].values()) / 1024
    pss = sum(v[1] for v in r["memory_kib"].values()) / 1024
    achieved = sum(w["achieved"] for w in ws) / len(ws)
    return (
        f"| {r['code']} | {r['monitors']:,} | {r['interval']} s | {_fsync(r)} "
        f"| {r['nats']} "
        f"| {r['configured']:.1f} | {achieved:.1f} | {sum(w['missing'] for w in ws):,} of "
        f"{sum(w['due'] for w in ws):,} | {jitter} "
        f"| **{med:.2f}** ({per[0]:.2f}-{per[-1]:.2f}) | {med * r.get('regions', len(REGIONS)):.2f} "
        f"| {parts} "
        f"| {rss:.0f} MiB ({pss:.0f}) over {r['processes']} |"
    )


def _dirty() -> bool:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "controller", "probe", "shared"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(out.stdout.strip())


def _memory_rows(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v[0] / 1024:.0f} MiB ({v[1] / 1024:.0f})" for k, v in r["memory_kib"].items())


@click.command()
@click.option("--monitors", "counts", type=int, multiple=True, default=[1000, 10000], show_default=True)
@click.option("--interval", type=int, default=60, show_default=True)
@click.option("--window", type=float, default=60.0, show_default=True, help="Seconds per measured window.")
@click.option("--windows", type=click.IntRange(1, 10), default=3, show_default=True)
@click.option(
    "--fsync",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    show_default=True,
    help="PostgreSQL durability (fsync, synchronous_commit, full_page_writes); both = one run of each.",
)
@click.option(
    "--nats",
    "nats_mode",
    type=click.Choice(["plain", "secure", "both"]),
    default="plain",
    show_default=True,
    help="NATS without TLS and authentication, or as the fleet runs it (operator mode, TLS, a"
    " credential per probe); both = one run of each, side by side.",
)
@click.option(
    "--pg-setting",
    multiple=True,
    metavar="NAME=VALUE",
    help="A PostgreSQL server setting for an A/B of settings (shared_buffers=16MB); repeatable.",
)
@click.option(
    "--controller-setting",
    multiple=True,
    metavar="NAME=VALUE",
    help="A controller setting as a TOML literal (db_pool_max=5), for an A/B; repeatable.",
)
@click.option(
    "--compare",
    metavar="REF",
    help="Before/after A/B in one run: each configuration with the code of git revision REF, then"
    " with the working tree's.",
)
@click.option(
    "--peer",
    type=click.Choice(["kuma"]),
    help="Also run Uptime Kuma with the same workload for each monitor count, counted the same"
    f" way (one location); Kuma from ${kuma_peer.ENV}, a release installed outside the repository.",
)
@click.option("--no-record", is_flag=True, help="Print only; leave bench/RESULTS.md alone.")
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    help="Profile mode (not a benchmark): print where the CPU goes per 1,000 checks -- py-spy"
    " samples of the controller and the probes (py-spy from PROBEFLEET_PYSPY or PATH), PostgreSQL's"
    " pg_stat_statements, WAL and table counters, NATS /varz and /connz -- and keep the raw"
    " stacks in this folder.",
)
def main(
    counts: tuple[int, ...],
    pg_setting: tuple[str, ...],
    controller_setting: tuple[str, ...],
    interval: int,
    window: float,
    windows: int,
    fsync: str,
    nats_mode: str,
    no_record: bool,
    profile: Path | None,
    compare: str | None,
    peer: str | None,
) -> None:
    kuma_root = kuma_peer.kuma_dir() if peer == "kuma" else None  # before any run: fail fast
    calib, load0 = calibration(), load_average()
    modes = {"off": [False], "on": [True], "both": [False, True]}[fsync]
    securities = {"plain": [False], "secure": [True], "both": [False, True]}[nats_mode]
    settings = dict(s.split("=", 1) for s in pg_setting)
    ctl_settings = dict(s.split("=", 1) for s in controller_setting)
    head = _rev("HEAD") + ("+" if _dirty() else "")
    base = _rev(compare) if compare else None
    results = []
    with tempfile.TemporaryDirectory(prefix="pf-bench-") as tmp, contextlib.ExitStack() as stack:
        codes: list[tuple[str, Path | None]] = [(head, None)]
        if base is not None:
            codes.insert(0, (base, stack.enter_context(checkout(base, Path(tmp)))))
        for n in counts:
            for durable in modes:
                for secure in securities:
                    for code in codes:
                        r = run_one(
                            n,
                            interval,
                            window,
                            windows,
                            Path(tmp),
                            durable=durable,
                            secure=secure,
                            profile=profile,
                            pg_settings=settings,
                            controller_settings=ctl_settings,
                            code=code,
                        )
                        click.echo(r)
                        results.append(r)
            if kuma_root is not None:
                r = kuma_peer.run(n, interval, window, windows, Path(tmp), kuma_root)
                click.echo(r)
                results.append(r)
    table = [
        "| code | monitors | interval | fsync | NATS | configured checks/s | achieved checks/s | missing "
        "| jitter p99 | CPU-s per 1,000 checks, all processes (median, range of windows) "
        "| per 1,000 monitor rounds (all its regions) | controller / probes / nats / postgres "
        "| memory RSS (PSS) over processes |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
        *(_summary(r) for r in results),
    ]
    memory = "\n".join(
        f"- {r['code']}, {r['monitors']:,} monitors"
        + (f", fsync {_fsync(r)}, NATS {r['nats']}" if r["durable"] is not None else "")
        + f": {_memory_rows(r)}"
        for r in results
    )
    body = (
        f"Command: `python -m bench.e2e {' '.join(f'--monitors {n}' for n in counts)} --interval {interval}"
        f" --window {window:g} --windows {windows} --fsync {fsync} --nats {nats_mode}"
        f"{''.join(f' --pg-setting {s}' for s in pg_setting)}"
        f"{''.join(f' --controller-setting {s}' for s in controller_setting)}"
        f"{f' --compare {compare}' if compare else ''}{f' --peer {peer}' if peer else ''}` (`make bench`).\n"
        f"Code: {head} (the working tree){f', against {base} ({compare}) run first' if base else ''}.\n"
        f"Load average before: {load0}; after: {load_average()}. Calibration: a fixed pure-Python\n"
        f"loop takes {calib:.1f} ms on this machine (quote ratios between runs of different machines).\n\n"
        "Real processes: embedded NATS and PostgreSQL, one controller, three probes bound to\n"
        "127.0.0.11-13, one keep-alive aiohttp target in its own process (not counted). CPU is\n"
        "user+system time of every process of the system: the controller, the probes,\n"
        "nats-server, and PostgreSQL's postmaster with all its backends and helpers, including\n"
        "backends that exited during a window (reaped children's time, counted once). Jitter is\n"
        "the probe's start time minus the round's due time. Checks due are counted from every\n"
        "monitor's phase offset; missing = due minus stored first-attempt results.\n\n"
        + (kuma_peer.reading(results) if kuma_root is not None else "")
        + "\n".join(table)
        + "\n\nMemory per component at the end of the last window, RSS (PSS):\n"
        + memory
        + "\n"
    )
    if not no_record:
        # One section per kind of comparison, so that recording one does not replace another.
        compared = [
            *([f"against {compare}"] if compare else []),
            *(["fsync on and off"] if fsync == "both" else [f"fsync {fsync}"] if fsync == "on" else []),
            *(["NATS plain and secure"] if nats_mode == "both" else []),
            *([f"beside {peer}"] if peer else []),
        ]
        title = "End-to-end checks, every process counted (issue 24)"
        record(title + (f": {', '.join(compared)}" if compared else ""), body)
    click.echo(body)


if __name__ == "__main__":
    main()
