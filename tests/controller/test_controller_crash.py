"""A controller killed with SIGKILL (no clean leave): the survivor takes over its
monitors once the lease expires, within two intervals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from probefleet.controller import keys
from probefleet.controller.cluster.sharding import shard_of
from probefleet.shared.devstack import free_port
from tests.controller.conftest import start_controller
from tests.helpers import eventually

REPO = Path(__file__).resolve().parents[2]


async def test_it_takes_over_the_monitors_of_a_killed_controller(
    database: str, nats_url: str, tmp_path: Path
) -> None:
    b = await start_controller(database, nats_url, controller_id="ctl-b", controller_heartbeat_interval=0.5)
    config = tmp_path / "a.toml"
    config.write_text(
        'controller_id = "ctl-a"\ncontroller_heartbeat_interval = 0.5\nround_grace = 1.0\n'
        'regions = [{id = "us-east"}, {id = "eu-west"}, {id = "ap-south"}]\n'
    )
    env = {**os.environ, "PROBEFLEET_DATABASE_URL": database, "PROBEFLEET_NATS_URL": nats_url}
    a = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "probefleet.shared.cli",
            "controller",
            "serve",
            "--config",
            str(config),
            "--port",
            str(free_port()),
        ],
        cwd=REPO,
        env=env,
    )
    pool = b.app[keys.POOL]
    try:
        headers = {"Authorization": f"Bearer {b.admin_key}"}
        async with aiohttp.ClientSession(base_url=b.base, headers=headers) as api:
            ids = []
            for i in range(24):
                r = await api.post(
                    "/api/v1/monitors",
                    json={"name": f"m{i}", "url": "http://127.0.0.1:9/", "check_interval": 1, "timeout": 1},
                )
                ids.append((await r.json())["data"]["id"])
        scheduler = b.app[keys.SCHEDULER]

        async def both_members_and_split() -> bool:
            rows = await pool.fetch("SELECT id FROM controllers WHERE lease_until > now()")
            return {r["id"] for r in rows} == {"ctl-a", "ctl-b"} and len(scheduler.entries) < len(ids)

        await eventually(both_members_and_split, what="A and B both members, B holding a share only")
        a_ids = [m for m in ids if m not in scheduler.entries]
        assert a_ids, "controller A should own some monitors"

        async def a_schedules_its_share() -> bool:
            seen = await pool.fetchval(
                "SELECT count(DISTINCT monitor_id) FROM rounds WHERE monitor_id = ANY($1)", a_ids
            )
            return bool(seen == len(a_ids))

        # A really schedules its share: rounds exist for its monitors.
        await eventually(a_schedules_its_share, timeout=1.5, what="rounds of every monitor A owns")

        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.time()
        # Lease 1.5 s, then every monitor must be ours and get rounds again: within the lease,
        # two intervals and a second, counted from the kill.
        deadline = killed + 1.5 + 2 * 1.0 + 1.0

        async def all_rounds_again() -> bool:
            after = await pool.fetchval(
                "SELECT count(DISTINCT monitor_id) FROM rounds"
                " WHERE monitor_id = ANY($1) AND due > to_timestamp($2)",
                a_ids,
                killed + 1.5,
            )
            return bool(after == len(a_ids))

        await eventually(
            all_rounds_again, timeout=deadline - time.time(), what="rounds of A's monitors after the lease"
        )
        assert set(ids) <= set(scheduler.entries), {shard_of(m) for m in set(ids) - set(scheduler.entries)}
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        await b.stop()
