"""A controller killed with SIGKILL (no clean leave): the survivor takes over its
monitors once the lease expires, within two intervals."""

from __future__ import annotations

import asyncio
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
        membership_deadline = time.monotonic() + 20
        while time.monotonic() < membership_deadline:
            members = {
                r["id"] for r in await pool.fetch("SELECT id FROM controllers WHERE lease_until > now()")
            }
            if members == {"ctl-a", "ctl-b"} and len(b.app[keys.SCHEDULER].entries) < len(ids):
                break
            await asyncio.sleep(0.1)
        scheduler = b.app[keys.SCHEDULER]
        a_ids = [m for m in ids if m not in scheduler.entries]
        assert a_ids, "controller A should own some monitors"
        await asyncio.sleep(1.5)
        # A really schedules its share: rounds exist for its monitors.
        seen = await pool.fetchval(
            "SELECT count(DISTINCT monitor_id) FROM rounds WHERE monitor_id = ANY($1)", a_ids
        )
        assert seen == len(a_ids)

        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.time()
        # Lease 1.5 s, then every monitor must be ours and get rounds again.
        await asyncio.sleep(1.5 + 2 * 1.0 + 1.0)
        assert set(ids) <= set(scheduler.entries), {shard_of(m) for m in set(ids) - set(scheduler.entries)}
        after = await pool.fetchval(
            "SELECT count(DISTINCT monitor_id) FROM rounds"
            " WHERE monitor_id = ANY($1) AND due > to_timestamp($2)",
            a_ids,
            killed + 1.5,
        )
        assert after == len(a_ids)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        await b.stop()
