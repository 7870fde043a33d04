"""End to end: real probes, a target that goes down, two controllers on one PostgreSQL and
NATS; every channel receives each incident notice exactly once."""

from __future__ import annotations

import json
from collections import Counter

import aiohttp
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.notifications.notifiers.webhook import SIGNATURE_HEADER, verify_signature
from tests.controller.conftest import start_controller
from tests.fleet import RegionalTarget, start_probes, stop_probes
from tests.helpers import eventually

SECRET = "whsec-two-controllers"


async def test_two_controllers_deliver_each_incident_notice_once_per_channel(
    database: str, nats_url: str
) -> None:
    got: Counter[tuple[str, str]] = Counter()
    bad_signatures: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
            bad_signatures.append(request.path)
        got[(request.path, json.loads(body)["event"])] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{name}", handle)
    receiver = web.AppRunner(app, access_log=None)
    await receiver.setup()
    await web.TCPSite(receiver, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{receiver.addresses[0][1]}"
    target = RegionalTarget()
    await target.start()
    a = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    b = await start_controller(database, nats_url, controller_heartbeat_interval=0.3)
    probes = await start_probes(nats_url)
    pool = a.app[keys.POOL]
    try:
        async with aiohttp.ClientSession(
            base_url=a.base, headers={"Authorization": f"Bearer {a.admin_key}"}
        ) as api:
            ids = []
            for name in ("ops", "oncall"):
                r = await api.post(
                    "/api/v1/notification-channels",
                    json={
                        "name": name,
                        "kind": "webhook",
                        "config": {"url": f"{base}/{name}", "secret": SECRET},
                    },
                )
                assert r.status == 201, await r.text()
                ids.append((await r.json())["data"]["id"])
            r = await api.post("/api/v1/notification-rules", json={"channel_ids": ids})
            assert r.status == 201, await r.text()
            r = await api.post(
                "/api/v1/monitors",
                json={"name": "shop", "url": target.url, "check_interval": 1, "timeout": 1},
            )
            assert r.status == 201, await r.text()
            await eventually(lambda: target.hits, timeout=15, what="a first check")
            target.fail_all()
            await eventually(
                lambda: all(got[(f"/{n}", "incident.opened")] for n in ("ops", "oncall")),
                timeout=20,
                what="incident.opened at both channels",
            )
            target.recover()
            await eventually(
                lambda: all(got[(f"/{n}", "incident.resolved")] for n in ("ops", "oncall")),
                timeout=20,
                what="incident.resolved at both channels",
            )
            # The failing regions' diagnoses come back as the incident's update (written once).
            await eventually(
                lambda: all(got[(f"/{n}", "incident.diagnosed")] for n in ("ops", "oncall")),
                timeout=20,
                what="incident.diagnosed at both channels",
            )

            async def outbox_settled() -> bool:
                # Every event fanned out and no delivery left to send. A delivery settles when its
                # last claimant records it (store.record matches the claim's attempt), so a
                # second send by the other dispatcher has reached the receiver by then.
                return bool(
                    await pool.fetchval(
                        "SELECT (SELECT last_event_id FROM dispatcher_cursor WHERE name = 'fanout')"
                        " >= (SELECT max(id) FROM events) AND NOT EXISTS (SELECT FROM deliveries"
                        " WHERE status IN ('pending', 'sending', 'failed', 'held'))"
                    )
                )

            await eventually(outbox_settled, what="nothing left for either dispatcher")
            for name in ("ops", "oncall"):
                assert got[(f"/{name}", "incident.opened")] == 1
                assert got[(f"/{name}", "incident.resolved")] == 1
                assert got[(f"/{name}", "incident.diagnosed")] == 1
            assert bad_signatures == []
            r = await api.get(f"/api/v1/notification-channels/{ids[0]}/deliveries")
            rows = (await r.json())["data"]
            assert sorted(d["status"] for d in rows) == ["delivered", "delivered", "delivered"]
    finally:
        await stop_probes(probes)
        await a.stop()
        await b.stop()
        await target.stop()
        await receiver.cleanup()
