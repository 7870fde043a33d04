"""Two controllers on one PostgreSQL and one NATS: each monitor scheduled by exactly one,
no job published twice, one incident per outage, and takeover when one stops."""

from __future__ import annotations

from collections import Counter

import aiohttp
import nats
from nats.aio.msg import Msg

from probefleet.controller import keys
from probefleet.shared import subjects, wire
from tests.controller.conftest import start_controller
from tests.fleet import REGION_ADDRESSES, RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually


async def test_two_controllers_split_the_schedule_and_open_each_incident_once(
    database: str, nats_url: str
) -> None:
    target = RegionalTarget()
    await target.start()
    a = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    b = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    running = [a, b]
    probes = await start_probes(nats_url)
    jobs: Counter[str] = Counter()

    async def on_job(msg: Msg) -> None:
        for job in wire.decode_jobs(msg.data):
            jobs[job.job_id] += 1

    watcher = await nats.connect(nats_url)
    for region in REGION_ADDRESSES:
        await watcher.subscribe(subjects.jobs(region), cb=on_job)
    sa, sb = a.app[keys.SCHEDULER], b.app[keys.SCHEDULER]
    pool = a.app[keys.POOL]
    try:
        await eventually(
            lambda: sa.owns is not None and len(_members(a)) == 2 and len(_members(b)) == 2,
            what="each controller sees both",
        )
        headers = {"Authorization": f"Bearer {a.admin_key}"}
        async with aiohttp.ClientSession(base_url=a.base, headers=headers) as api:
            ids = []
            for i in range(8):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": target.url, "check_interval": 1, "timeout": 1},
                )
                ids.append((await r.json())["data"]["id"])
        await eventually(
            lambda: set(sa.entries) | set(sb.entries) == set(ids), what="every monitor scheduled"
        )
        assert not set(sa.entries) & set(sb.entries)
        assert sa.entries and sb.entries  # both hold a share

        target.fail_all()

        async def all_open() -> bool:
            n = await pool.fetchval("SELECT count(DISTINCT monitor_id) FROM incidents")
            return bool(n == len(ids))

        await eventually(all_open, what="an incident for every monitor")
        all_open_at = await pool.fetchval("SELECT now()")

        async def more_failing_rounds() -> bool:
            # Rounds after the incidents opened, closed by either controller: each a chance to
            # open a second incident.
            n = await pool.fetchval(
                "SELECT count(*) FROM (SELECT monitor_id FROM rounds"
                " WHERE due > $1 AND attempt = 0 AND verdict = 'down'"
                " GROUP BY monitor_id HAVING count(*) >= 2) AS failing",
                all_open_at,
            )
            return bool(n == len(ids))

        await eventually(more_failing_rounds, what="two more failing rounds of every monitor")
        per_monitor = await pool.fetch("SELECT monitor_id, count(*) AS n FROM incidents GROUP BY monitor_id")
        assert {r["n"] for r in per_monitor} == {1}
        opened = await pool.fetchval("SELECT count(*) FROM events WHERE kind = 'incident.opened'")
        assert opened == len(ids)
        assert jobs and max(jobs.values()) == 1, "a job was published twice"

        await a.stop()  # b must take over a's monitors
        running.remove(a)
        pool = b.app[keys.POOL]
        await eventually(lambda: set(sb.entries) == set(ids), timeout=3.0, what="b holds every monitor")
        since = await pool.fetchval("SELECT now()")

        async def all_checked() -> bool:
            n = await pool.fetchval(
                "SELECT count(DISTINCT monitor_id) FROM rounds WHERE due > $1 AND attempt = 0", since
            )
            return bool(n == len(ids))

        await eventually(all_checked, timeout=3.0, what="a round of every monitor after the takeover")
    finally:
        await watcher.close()
        await stop_probes(probes)
        for c in running:
            await c.stop()
        await target.stop()


def _members(c: object) -> tuple[str, ...]:
    return tuple(c.app[keys.SCHEDULER].owns.__self__.members)  # type: ignore[attr-defined]
