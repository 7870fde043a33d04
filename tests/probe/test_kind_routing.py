"""Jobs in a mixed region (some live probes able to run a kind, some not) go to the able
probes only, on the kind's own subject; a probe whose credential predates kind subjects
takes every job on the region subject, and the controller falls back to it for the kinds
that probe can run.

Real NATS in operator mode with the fleet's credentials, a real controller and database,
real probes (`Agent`, one limited to http and tcp), the suite's PostgreSQL as the target
of a postgres monitor (a kind of the `checks` extra, which a probe may lack).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.cluster import trust
from probefleet.controller.config import Region
from probefleet.probe.agent import Agent
from probefleet.probe.checkers import CHECKERS
from probefleet.shared import natscreds, subjects
from probefleet.shared.devstack import PostgresServer
from tests.controller.conftest import Running, start_controller
from tests.fleet import SecureNats
from tests.helpers import eventually


def _old_creds(nats_: SecureNats, path: Path, *, region: str, probe_id: str) -> Path:
    """A probe credential as enrollment issued it before kind subjects: the region subject
    only."""
    seed, public = natscreds.new_user_keypair()
    permissions = trust.probe_permissions(region, probe_id)
    permissions["sub"]["allow"] = [
        a for a in permissions["sub"]["allow"] if not a.startswith(subjects.jobs_kinds(region))
    ]
    claims = trust._user_claims(
        public, probe_id, account=nats_.trust.account_public_key, permissions=permissions
    )
    natscreds.write_creds(path, trust.encode_jwt(claims, nats_.trust._signing), seed)
    return path


class Mixed:
    def __init__(
        self, nats_: SecureNats, tmp_path: Path, running: Running, api: aiohttp.ClientSession
    ) -> None:
        self.nats, self.tmp_path, self.running, self.api = nats_, tmp_path, running, api
        self.agents: list[Agent] = []

    async def probe(self, probe_id: str, *, old: bool = False, **kw: Any) -> Agent:
        path = self.tmp_path / f"{probe_id}.creds"
        if old:
            creds = _old_creds(self.nats, path, region="eu-west", probe_id=probe_id)
        else:
            creds, _ = self.nats.probe_creds(path, region="eu-west", probe_id=probe_id)
        cfg = self.nats.probe_config(creds, region="eu-west", probe_id=probe_id)
        agent = Agent(cfg, **kw)
        await agent.start()
        self.agents.append(agent)
        return agent

    async def results(self, monitor_id: int) -> list[dict[str, Any]]:
        rows = await self.running.app[keys.POOL].fetch(
            "SELECT probe_id, status, reason FROM check_results WHERE monitor_id = $1 AND attempt < 1000",
            monitor_id,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def mixed(secure_nats: SecureNats, database: str, tmp_path: Path) -> AsyncIterator[Mixed]:
    running = await start_controller(
        database, secure_nats.url, fleet_trust_dir=str(secure_nats.trust_dir), regions=[Region(id="eu-west")]
    )
    headers = {"Authorization": f"Bearer {running.admin_key}"}
    async with aiohttp.ClientSession(base_url=running.base, headers=headers) as api:
        m = Mixed(secure_nats, tmp_path, running, api)
        try:
            yield m
        finally:
            for a in m.agents:
                await a.stop()
            await running.stop()


async def test_a_mixed_regions_kind_goes_to_its_able_probes_and_falls_back_for_an_old_credential(
    mixed: Mixed, postgres: PostgresServer
) -> None:
    able = await mixed.probe("p-able")
    limited = await mixed.probe("p-limited", checkers={k: CHECKERS[k] for k in ("http", "tcp")})
    assert "postgres" in able.heartbeat().kind_subjects and limited.heartbeat().kind_subjects == []
    running, api = mixed.running, mixed.api
    fleet = running.app[keys.FLEET]
    started = running.app[keys.SCHEDULER].started
    await eventually(
        lambda: (
            fleet.kind_routes().get("eu-west", {}).get("postgres") == 1
            and time.time() - started >= fleet.window
        ),
        timeout=15,
        what="both probes heard and the start window over",
    )

    port = urlsplit(postgres.dsn()).port
    r = await api.post(
        "/api/v1/monitors",
        json={
            "name": "db",
            "type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "user": postgres.user,
            "tls": "disable",
            "check_interval": 1,
            "locations": ["eu-west"],
        },
    )
    assert r.status == 201, await r.text()
    db_id = (await r.json())["data"]["id"]
    r = await api.post(
        "/api/v1/monitors",
        json={
            "name": "port",
            "type": "tcp",
            "host": "127.0.0.1",
            "port": port,
            "check_interval": 1,
            "locations": ["eu-west"],
        },
    )
    tcp_id = (await r.json())["data"]["id"]

    # Checked now, several times: the limited probe is never handed it.
    for _ in range(4):
        checked = (await (await api.post(f"/api/v1/monitors/{db_id}/check")).json())["data"]
        assert [(x["probe_id"], x["status"]) for x in checked["regions"]] == [("p-able", "ok")]

    async def rounds(monitor_id: int, n: int) -> list[dict[str, Any]] | None:
        got = await mixed.results(monitor_id)
        return got if len(got) >= n else None

    db_results = await eventually(lambda: rounds(db_id, 3), timeout=30, what="three postgres rounds")
    assert {(x["probe_id"], x["status"]) for x in db_results} == {("p-able", "ok")}
    # Both probes keep getting the common kinds on the region subject.
    await eventually(
        lambda: _probes_of(mixed, tcp_id, {"p-able", "p-limited"}),
        timeout=30,
        what="tcp results from both probes",
    )

    # A probe able to run postgres whose credential predates kind subjects joins: it hears
    # the region subject only, so postgres jobs go there again and it gets its share.
    old = await mixed.probe("p-old", old=True)
    assert old.heartbeat().kind_subjects == [] and old.healthy
    await eventually(
        lambda: "postgres" not in fleet.kind_routes().get("eu-west", {}),
        timeout=15,
        what="the controller falling back to the region subject for postgres",
    )

    async def checked_by_old() -> bool:
        checked = (await (await api.post(f"/api/v1/monitors/{db_id}/check")).json())["data"]
        return checked["regions"][0]["probe_id"] == "p-old"

    await eventually(checked_by_old, timeout=30, what="p-old answering a check now")


async def _probes_of(mixed: Mixed, monitor_id: int, probes: set[str]) -> bool:
    return probes <= {r["probe_id"] for r in await mixed.results(monitor_id)}
