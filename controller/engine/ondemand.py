"""Run a monitor now in every selected region and wait for the probes' results.

The jobs are ordinary check jobs with a fresh due and attempt ON_DEMAND, so probes run
the real checker and publish real results to JetStream (which stores them in
check_results like any other, visible in the monitor's logs). No round row is opened:
an on-demand run never changes the monitor's status or opens an incident. The caller
hears the results on the core subjects the results are published on, so it does not
depend on which controller's consumer stores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from probefleet.controller.cluster.fleet import Fleet, job_route, no_capable_probe
from probefleet.controller.engine import consensus
from probefleet.shared import subjects, wire

# Above any confirmation attempt (retry_count is at most 20).
ON_DEMAND_ATTEMPT = 1000


async def run(
    nc: NATS,
    fleet: Fleet,
    *,
    monitor_id: int,
    spec: wire.CheckSpec,
    check_timeout: float,
    locations: list[str],
    rule: consensus.Rule,
    grace: float,
) -> dict[str, Any]:
    """Publish one job per region with a live probe; return the per-region results and
    the verdict they give (regions without a live probe are reported as unavailable, those
    whose live probes cannot run the kind as skipped with no_capable_probe, no job sent)."""
    due = time.time()
    able = fleet.runnable(due)
    # A mixed region's kind goes to its able probes only (`Fleet.kind_routes`).
    routes = fleet.kind_routes(due)
    live = fleet.live_regions()
    regions = [r for r in locations if live.get(r)]
    got: dict[str, wire.CheckResult] = {}
    done = asyncio.Event()
    decoder = msgspec.msgpack.Decoder(wire.CheckResult)

    async def on_result(msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            r = decoder.decode(msg.data)
            if msg.subject != subjects.results(r.region):
                return  # another region's answer in a probe's body: the results consumer counts it
            if r.monitor_id == monitor_id and r.due == due and r.attempt == ON_DEMAND_ATTEMPT:
                got[r.region] = r
                if set(got) >= set(regions):
                    done.set()

    subs = [await nc.subscribe(subjects.results(region), cb=on_result) for region in regions]
    try:
        await nc.flush()
        for region in regions:
            job = wire.CheckJob(
                monitor_id=monitor_id,
                due=due,
                region=region,
                timeout=check_timeout,
                deadline=due + check_timeout + grace / 2,
                spec=spec,
                attempt=ON_DEMAND_ATTEMPT,
                # No batch_results: someone waits for this answer (no linger), and on_result
                # reads a single result.
            )
            if (skipped := no_capable_probe(job, able, due)) is not None:
                got[region] = skipped
                continue
            await nc.publish(job_route(job, routes)[0], wire.encode(job))
        if set(got) >= set(regions):
            done.set()
        if regions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), check_timeout + grace)
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return summarize(due, locations, regions, got, rule)


def summarize(
    due: float, locations: list[str], asked: list[str], got: dict[str, wire.CheckResult], rule: consensus.Rule
) -> dict[str, Any]:
    results = [
        consensus.RegionResult(
            region=r.region,
            status=str(r.status),
            reason=str(r.reason) if r.reason else None,
            message=r.message,
            duration_ms=r.duration_ms,
        )
        for r in got.values()
    ]
    verdict = consensus.decide(results, asked, rule)
    per_region: list[dict[str, Any]] = []
    for region in locations:
        r = got.get(region)
        if r is None:
            per_region.append(
                {
                    "region": region,
                    "status": "unavailable" if region not in asked else "no_answer",
                    "is_ok": None,
                    "reason": None,
                    "error": "no live probe in this region"
                    if region not in asked
                    else "no result before the deadline",
                    "response_time": None,
                    "status_code": None,
                    "probe_id": None,
                    "checked_at": None,
                }
            )
            continue
        per_region.append(
            {
                "region": region,
                "status": str(r.status),
                "is_ok": r.status in (wire.Status.OK, wire.Status.DEGRADED),
                "reason": str(r.reason) if r.reason else None,
                "error": r.message or None,
                "response_time": round(r.duration_ms, 3),
                "status_code": r.status_code,
                "probe_id": r.probe_id,
                "checked_at": wire_time(r.started_at),
            }
        )
    codes = [r.status_code for r in got.values() if r.status_code is not None]
    return {
        "status": verdict.state,
        "is_ok": verdict.state in ("up", "degraded"),
        "response_time": verdict.response_time_ms,
        "status_code": codes[0] if codes else None,
        "checked_at": wire_time(due),
        "error": verdict.message or None,
        "reason": verdict.reason,
        "attempt": ON_DEMAND_ATTEMPT,
        "regions": per_region,
    }


def wire_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")
