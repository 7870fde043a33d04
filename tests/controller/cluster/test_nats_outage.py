"""A NATS restart under a running controller and its probes: the controller's view of the
fleet is kept while it is cut off (blind, not empty), so no region becomes unavailable and
no round is decided `down`. Jobs are not published into the dead connection; the watcher
below sees late jobs only if it subscribed before the controller flushed them, so that
check catches the old behaviour now and then, not every run (the chaos NATS scenario
does: the flushed jobs gave false `down` rounds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from probefleet.controller import keys
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import NatsServer
from tests.controller.conftest import start_controller
from tests.fleet import REGION_ADDRESSES, RegionalTarget, start_probes
from tests.helpers import eventually


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


async def test_a_nats_restart_raises_no_region_event_and_sends_no_stale_job(
    database: str, nats_server: NatsServer, target: RegionalTarget
) -> None:
    ctl = await start_controller(database, nats_server.url)
    probes = await start_probes(nats_server.url)
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    pool, fleet = ctl.app[keys.POOL], ctl.app[keys.FLEET]
    watcher = None
    try:
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            r = await api.post(
                "/api/v1/monitors", json={"name": "t", "url": target.url, "check_interval": 1, "timeout": 2}
            )
            assert r.status == 201, await r.text()
            mid = (await r.json())["data"]["id"]

            async def answered_by_all() -> bool:
                row = await pool.fetchrow(
                    "SELECT count(*) AS n FROM rounds WHERE monitor_id = $1 AND verdict = 'up'"
                    " AND cardinality(answered) = 3",
                    mid,
                )
                return bool(row["n"] >= 2)

            await eventually(answered_by_all, timeout=20, what="rounds answered by the three regions")

            port = nats_server.port
            nats_server.stop()
            await eventually(
                lambda: not ctl.app[keys.NC].is_connected, timeout=10, what="the controller cut off"
            )
            # Longer than the window after which a silent probe is forgotten: the view stays.
            assert fleet.blind_since is not None
            await eventually(
                lambda: time.time() - fleet.blind_since > fleet.window + 1.0,
                timeout=10,
                what="an outage past the window",
            )
            assert set(fleet.live_regions()) == set(REGION_ADDRESSES)

            nats_server.start(port=port)
            late: list[wire.CheckJob] = []

            async def on_job(msg: Msg) -> None:
                for job in wire.decode_jobs(msg.data):
                    if job.deadline <= time.time():
                        late.append(job)

            watcher = await nats.connect(nats_server.url)
            await watcher.subscribe(subjects.jobs("*"), cb=on_job)
            await eventually(
                lambda: ctl.app[keys.NC].is_connected, timeout=20, what="the controller reconnected"
            )
            back = time.time()

            async def settled() -> bool:
                # Rounds due a window after the reconnect are decided, by every region again.
                n = await pool.fetchval(
                    "SELECT count(*) FROM rounds WHERE monitor_id = $1 AND due > to_timestamp($2)"
                    " AND closed_at IS NOT NULL AND cardinality(answered) = 3",
                    mid,
                    back + fleet.window,
                )
                return bool(n >= 2)

            await eventually(
                settled, timeout=30, what="rounds decided by the three regions after the restart"
            )
            events = await pool.fetch(
                "SELECT kind, payload->>'region' AS region FROM events WHERE monitor_id = $1"
                " AND kind IN ('region.unavailable', 'region.available')",
                mid,
            )
            assert [dict(e) for e in events] == []
            assert late == []
            verdicts = await pool.fetch(
                "SELECT DISTINCT verdict FROM rounds WHERE monitor_id = $1 AND closed_at IS NOT NULL", mid
            )
            assert {v["verdict"] for v in verdicts} <= {"up", "unknown"}
    finally:
        if watcher is not None:
            await watcher.close()
        # side by side: each stop runs the jobs it holds up to a lookahead ahead (~1 s)
        await asyncio.gather(*(p.stop() for p in probes))
        await ctl.stop()
