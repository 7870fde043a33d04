"""Results ingest throughput: results.ingest (controller/engine/results.py) on real PostgreSQL, no probes.

Opens rounds for M monitors in 3 regions (as the scheduler does), then feeds their
results in batches of 500 (the consumer's batch size) and reports results stored per
second, including the rounds bookkeeping, verdicts and monitor updates.

    python -m bench.ingest --monitors 2000 --rounds 10

The cost of failure evidence: `--evidence-compare` runs the same results twice, each on a
fresh database of one PostgreSQL, with `--failing` (10 %) of them failing: first without
evidence, then with the evidence a probe sends for a failed response, built by the probe's
own probe/evidence.py (status line, headers, the first `--evidence-body` bytes of an
HTML-like body, which the probe gzips when over 1 KiB), and records both side by side.
`--repeat N` runs N pairs of passes in alternating order and records the median of each
(a shared or busy machine slows some passes, not one mode). The failing results are the
same in every pass (a seeded draw), so the rounds, verdicts and incidents are too: only
the evidence differs.

    python -m bench.ingest --monitors 2000 --rounds 10 --evidence-compare --repeat 3
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

import click
import msgspec

from bench.common import record
from probefleet.controller.engine import results
from probefleet.controller.storage import db
from probefleet.controller.storage import results as store
from probefleet.probe.evidence import http_response
from probefleet.shared import devstack, wire
from probefleet.shared.evidence import EVIDENCE_BODY, LEVEL, to_stored

REGIONS = ["us-east", "eu-west", "ap-south"]
# Words for an evidence body that compresses about as well as an error page's HTML (a
# body of one repeated byte would cost PostgreSQL's TOAST compression nothing).
_PAGE = (
    "<div class=error> <p> Service Unavailable </p> upstream connect error or disconnect"
    " reset before headers retried and the latest reset reason connection failure request"
    " id trace cdn-cache miss backend server pool drained please try again later </div>"
)
_WORDS = _PAGE.split()
_SPEC = wire.HttpSpec(url="http://203.0.113.10/")
_encode = msgspec.msgpack.Encoder().encode


def evidence(body_bytes: int, rng: random.Random) -> dict[str, object]:
    """Evidence as a probe sends it for a 503 with a body, built by the probe's own
    function (probe/evidence.py): a body over 1 KiB travels gzip-compressed. A
    64 KiB body is the start of a longer page, as the checker keeps it."""
    words: list[str] = []
    size = 0
    page = body_bytes * 2 if body_bytes >= EVIDENCE_BODY else body_bytes
    while size < page:
        words.append(rng.choice(_WORDS))
        size += len(words[-1]) + 1
    return http_response(
        _SPEC,
        (wire.Reason.STATUS_MISMATCH, "status 503 not in 2xx, 3xx"),
        ips=["203.0.113.10"],
        status_line="HTTP/1.1 503 Service Unavailable",
        headers=[
            ("Server", "nginx/1.25.3"),
            ("Date", "Sun, 06 Dec 2026 14:00:00 GMT"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(page)),
            ("Connection", "keep-alive"),
            ("Retry-After", "30"),
            ("Cache-Control", "no-store"),
            ("X-Request-Id", f"{rng.getrandbits(64):016x}"),
            ("Set-Cookie", "session=bench"),
            ("Via", "1.1 edge-cache"),
        ],
        body=" ".join(words)[:page].encode(),
    )


def result(
    m: int, due: float, region: str, failing: bool, body_bytes: int | None, rng: random.Random
) -> wire.CheckResult:
    """One result; a failing one carries evidence when `body_bytes` is not None."""
    if not failing:
        return wire.CheckResult(
            monitor_id=m,
            due=due,
            region=region,
            probe_id=f"p-{region}",
            status=wire.Status.OK,
            started_at=due + 0.01,
            duration_ms=12.5,
            status_code=200,
            timings={"total": 12.5},
        )
    return wire.CheckResult(
        monitor_id=m,
        due=due,
        region=region,
        probe_id=f"p-{region}",
        status=wire.Status.FAIL,
        reason=wire.Reason.STATUS_MISMATCH,
        message="status 503 not in 2xx, 3xx",
        started_at=due + 0.01,
        duration_ms=14.0,
        status_code=503,
        timings={"dns": 0.4, "connect": 1.1, "tls": 3.2, "first_byte": 13.0, "total": 14.0},
        details={"evidence": evidence(body_bytes, rng)} if body_bytes is not None else {},
    )


async def run(
    dsn: str,
    monitors: int,
    rounds: int,
    batch: int,
    failing: float = 0.0,
    body_bytes: int | None = None,
    decode: bool = False,
    server: Path | None = None,
) -> dict[str, float]:
    """One pass; with `decode`, the results reach `results.ingest` as the consumer gets them,
    each decoded from its msgpack message in the timed loop. With `server` (the PostgreSQL
    data directory), also the CPU seconds of this process and of the server's processes
    over the loop: on a shared machine they vary less than the wall time."""
    await db.migrate(dsn)
    pool = await db.create_pool(dsn, max_size=4)
    try:
        await pool.execute(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations)"
            ' SELECT \'m\' || g, \'http\', \'{"type": "http", "url": "http://127.0.0.1/"}\', 60, 5, $1'
            " FROM generate_series(1, $2) g",
            REGIONS,
            monitors,
        )
        ids = [r["id"] for r in await pool.fetch("SELECT id FROM monitors ORDER BY id")]
        base = time.time() - rounds * 60 - 120
        all_results: list[wire.CheckResult] = []
        draw, bodies = random.Random(20), random.Random(26)  # the same failures in every pass
        for k in range(rounds):
            due = base + k * 60
            await store.insert_rounds(
                pool, [(m, store.ts(due), 0, REGIONS, store.ts(due + 3600)) for m in ids]
            )
            for m in ids:
                for region in REGIONS:
                    fails = failing > 0 and draw.random() < failing
                    all_results.append(result(m, due, region, fails, body_bytes, bodies))
        # With `decode`, as they arrive from NATS: one msgpack message per result, decoded as
        # the results consumer decodes them (a compressed body as its gzip bytes).
        messages = [_encode(r) for r in all_results] if decode else []
        cpu = time.process_time(), server_cpu(server) if server else 0.0
        start = time.perf_counter()
        stored = 0
        for i in range(0, len(all_results), batch):
            taken = all_results[i : i + batch]
            if decode:
                taken = [r for data in messages[i : i + batch] for r in wire.decode_results(data)]
            stored += await results.ingest(pool, taken)
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - cpu[0]
        pg_cpu = server_cpu(server) - cpu[1] if server else 0.0
        closed = await pool.fetchval("SELECT count(*) FROM rounds WHERE verdict IS NOT NULL")
        size = await pool.fetchval(  # with TOAST, over the partitions
            "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('check_results')"
        )
        failed = sum(1 for r in all_results if r.status == wire.Status.FAIL)
        return {
            "results": stored,
            "failed": failed,
            "seconds": elapsed,
            "per_second": stored / elapsed,
            "rounds_closed": closed,
            "table_mib": size / (1 << 20),
            "client_cpu": client_cpu,
            "server_cpu": pg_cpu,
        }
    finally:
        await pool.close()


def server_cpu(data_dir: Path) -> float:
    """CPU seconds (user and system) of the PostgreSQL server's processes so far: the
    postmaster named in `postmaster.pid` and its children (backends, WAL writer,
    checkpointer), from /proc. A process that ended meanwhile takes its count with it:
    the pool's backends live through the pass."""
    postmaster = (data_dir / "postmaster.pid").read_text().split()[0]
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        # after the name: state, ppid, ...; utime and stime are the 12th and 13th
        if stat.parent.name == postmaster or fields[1] == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def compare(
    pg: devstack.PostgresServer,
    monitors: int,
    rounds: int,
    batch: int,
    failing: float,
    body: int,
    repeat: int = 1,
) -> str:
    """Evidence off and on, each pass on a fresh database, `repeat` times in alternating
    order (off, on, on, off, off, ...: a slow spell of the machine falls on both, and
    neither always goes first), after a short pass that is not counted (the server's and
    this process's first run): the median pass of each, for RESULTS.md."""
    asyncio.run(devstack.create_database(pg.dsn(), "bench_warmup", drop=True))
    asyncio.run(run(pg.dsn("bench_warmup"), min(monitors, 200), 2, batch, failing, body, decode=True))
    passes: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    modes: list[tuple[str, int | None]] = [("off", None), ("on", body)]
    for i in range(repeat):
        for name, body_bytes in modes if i % 2 == 0 else modes[::-1]:
            asyncio.run(devstack.create_database(pg.dsn(), f"bench_{name}", drop=True))
            dsn = pg.dsn(f"bench_{name}")
            passes[name].append(
                asyncio.run(
                    run(
                        dsn,
                        monitors,
                        rounds,
                        batch,
                        failing,
                        body_bytes,
                        decode=True,
                        server=pg.data_dir / "pgdata",
                    )
                )
            )
    rows = [(name, median_pass(runs)) for name, runs in passes.items()]
    off = rows[0][1]["per_second"]
    sample = evidence(body, random.Random(26))
    sent = len(msgspec.msgpack.encode(sample))
    packed = len(cast(bytes | str, sample.get("body_gzip", sample.get("body", ""))))
    stored = len(to_stored(sample))
    table = (
        "| evidence | results | failed | seconds | results/s | vs off | passes (results/s)"
        " | check_results MiB |\n"
        "|---|---:|---:|---:|---:|---:|---|---:|\n"
    )
    for name, r in rows:
        each = ", ".join(f"{p['per_second']:,.0f}" for p in passes[name])
        table += (
            f"| {name} | {r['results']:,.0f} | {r['failed']:,.0f} | {r['seconds']:.1f} |"
            f" {r['per_second']:,.0f} | {100 * (r['per_second'] / off - 1):+.1f} % | {each} |"
            f" {r['table_mib']:.1f} |\n"
        )
    return (
        f"Command: `python -m bench.ingest --monitors {monitors} --rounds {rounds} --batch {batch}"
        f" --evidence-compare --failing {failing} --evidence-body {body} --repeat {repeat}`.\n\n"
        f"`results.ingest` as above, {failing:.0%} of the results failing (a seeded draw: the same\n"
        "results, rounds and verdicts in every pass), each pass on a fresh database of one\n"
        f"PostgreSQL, off and on {repeat} times each in alternating order (off, on, on, off, ...)\n"
        "after a short uncounted pass, the median pass of each shown (every pass in `passes`).\n"
        "`on`: each failing result carries the evidence a probe sends,\n"
        f"built by probe/evidence.py (status line, 10 headers, {body:,} bytes of an HTML-like body,\n"
        f"{f'gzip level {LEVEL}' if 'body_gzip' in sample else 'as text'}: {packed:,} bytes;"
        f" {sent:,} bytes of msgpack in all), stored in\n"
        f"check_results.evidence as {stored:,} bytes; `off`: the same results without it. The\n"
        "results reach `results.ingest` as the consumer gets them: decoded from one msgpack\n"
        "message each, in the timed loop.\n"
        "The goal (issue 20): under 10 % fewer results/s with evidence on.\n\n"
        + table
        + "\nCPU over the same loops, per 1,000 results stored (median of the passes): this\n"
        "process (decoding, `results.ingest`) and the PostgreSQL server's processes (backends,\n"
        "WAL writer, checkpointer), which a busy machine changes less than the wall time.\n\n"
        + cpu_table(passes)
    )


def cpu_table(passes: dict[str, list[dict[str, float]]]) -> str:
    """CPU ms per 1,000 results stored, median over each mode's passes, and vs off."""

    def per_k(r: dict[str, float], key: str) -> float:
        return 1000 * 1000 * r[key] / max(r["results"], 1)

    def median(name: str, key: str) -> float:
        return statistics.median(per_k(r, key) for r in passes[name])

    off = median("off", "client_cpu") + median("off", "server_cpu")
    out = (
        "| evidence | controller CPU ms | PostgreSQL CPU ms | total | vs off | passes (total) |\n"
        "|---|---:|---:|---:|---:|---|\n"
    )
    for name in passes:
        client, server = median(name, "client_cpu"), median(name, "server_cpu")
        each = ", ".join(f"{per_k(r, 'client_cpu') + per_k(r, 'server_cpu'):.0f}" for r in passes[name])
        out += (
            f"| {name} | {client:.0f} | {server:.0f} | {client + server:.0f} |"
            f" {100 * ((client + server) / off - 1):+.1f} % | {each} |\n"
        )
    return out


def median_pass(runs: list[dict[str, float]]) -> dict[str, float]:
    """The pass with the median results/s (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["per_second"])[(len(runs) - 1) // 2]


@click.command()
@click.option("--monitors", type=int, default=2000, show_default=True)
@click.option("--rounds", type=int, default=10, show_default=True)
@click.option("--batch", type=int, default=500, show_default=True)
@click.option(
    "--evidence-compare",
    is_flag=True,
    help="Evidence off and on, side by side, with --failing results failing.",
)
@click.option("--failing", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option(
    "--evidence-body",
    type=click.IntRange(0, 64 << 10),
    default=64 << 10,
    show_default=True,
    help="Body bytes in each evidence (the checker keeps at most 64 KiB).",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="With --evidence-compare: off and on passes, alternating, this many times each.",
)
@click.option("--no-record", is_flag=True)
def main(
    monitors: int,
    rounds: int,
    batch: int,
    evidence_compare: bool,
    failing: float,
    evidence_body: int,
    repeat: int,
    no_record: bool,
) -> None:
    if evidence_compare:
        with tempfile.TemporaryDirectory(prefix="pf-ingest-") as tmp:
            pg = devstack.PostgresServer(Path(tmp) / "pg", ephemeral=True)
            pg.start()
            try:
                text = compare(pg, monitors, rounds, batch, failing, evidence_body, repeat)
            finally:
                pg.stop()
        click.echo(text)
        if not no_record:
            record("Evidence on the results ingest path (issue 20)", text)
        return
    with tempfile.TemporaryDirectory(prefix="pf-ingest-") as tmp:
        pg = devstack.PostgresServer(Path(tmp) / "pg", ephemeral=True)
        pg.start()
        try:
            asyncio.run(devstack.create_database(pg.dsn(), "bench", drop=True))
            r = asyncio.run(run(pg.dsn("bench"), monitors, rounds, batch))
        finally:
            pg.stop()
    body = (
        f"Command: `python -m bench.ingest --monitors {monitors} --rounds {rounds} --batch {batch}`.\n\n"
        "`results.ingest` (controller/engine/results.py) on the embedded PostgreSQL (fsync off,\n"
        "as in tests), one "
        "process, batches as the JetStream consumer takes them: store results, mark regions\n"
        "answered, close complete rounds, decide and apply verdicts, in one transaction per batch.\n"
        "NATS fetch/ack is not included.\n\n"
        f"| results | seconds | results/s | rounds closed |\n|---:|---:|---:|---:|\n"
        f"| {r['results']:,.0f} | {r['seconds']:.1f} | {r['per_second']:,.0f} | {r['rounds_closed']:,.0f} |\n"
    )
    click.echo(body)
    if not no_record:
        record("Results ingest (issues 2 and 8)", body)


if __name__ == "__main__":
    main()
