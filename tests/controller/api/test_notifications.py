"""/api/v1/notification-channels and /notification-rules: CRUD, redaction, test sends, errors;
monitors' references to channels and escalation policies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.notifications.notifiers.webhook import SIGNATURE_HEADER, verify_signature
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import notifications as store
from tests.controller.conftest import Running, start_controller

TOKEN = "T0A1B2C3D/B0X9Y8Z7W/s3cr3tSlackToken"
SECRET = "whsec-very-secret-value"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    """A webhook receiver on loopback: /ok answers 200, /gone answers 410."""
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(status=410 if request.path == "/gone" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen, bodies
    await runner.cleanup()


async def _create(api: aiohttp.ClientSession, **body: object) -> dict[str, object]:
    r = await api.post("/api/v1/notification-channels", json=body)
    assert r.status == 201, await r.text()
    data: dict[str, object] = (await r.json())["data"]
    return data


async def _post(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await api.post(path, json=body)
    return r.status, await r.json()


async def test_it_never_returns_secrets_and_keeps_them_on_update(
    api: aiohttp.ClientSession, controller: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"https://hooks.slack.com/services/{TOKEN}"
    ch = await _create(api, name="ops", type="slack", config={"url": url})
    assert ch["kind"] == "slack" and ch["is_enabled"] is True
    for path in ("/api/v1/notification-channels", f"/api/v1/notification-channels/{ch['id']}"):
        text = await (await api.get(path)).text()
        assert "s3cr3tSlackToken" not in text and "hooks.slack.com" in text
    shown = (await (await api.get(f"/api/v1/notification-channels/{ch['id']}")).json())["data"]
    # PUT back exactly what was shown, with a new name: the secret URL stays the stored one.
    r = await api.put(
        f"/api/v1/notification-channels/{ch['id']}", json={"name": "ops2", "config": shown["config"]}
    )
    assert r.status == 200, await r.text()
    assert "s3cr3tSlackToken" not in await r.text() and (await r.json())["data"]["name"] == "ops2"
    pool = controller.app[keys.POOL]
    stored = await pool.fetchval("SELECT config FROM notification_channels WHERE id=$1", ch["id"])
    assert stored["url"] == url
    assert "s3cr3tSlackToken" not in caplog.text


async def test_it_sends_a_signed_test_and_lists_the_delivery(
    api: aiohttp.ClientSession, receiver: tuple[str, list[web.Request], list[bytes]]
) -> None:
    base, seen, bodies = receiver
    ch = await _create(
        api,
        name="hook",
        kind="webhook",
        config={"url": f"{base}/ok", "secret": SECRET, "headers": {"X-Token": "hdr-secret"}},
    )
    assert SECRET not in str(ch) and "hdr-secret" not in str(ch)
    r = await api.post(f"/api/v1/notification-channels/{ch['id']}/test")
    assert r.status == 200, await r.text()
    out = (await r.json())["data"]
    assert out["delivered"] is True and out["status"] == "delivered"
    assert len(seen) == 1 and seen[0].headers["X-Probefleet-Event"] == "test"
    assert verify_signature(SECRET, seen[0].headers[SIGNATURE_HEADER], bodies[0])
    assert not verify_signature("wrong", seen[0].headers[SIGNATURE_HEADER], bodies[0])
    r = await api.get(f"/api/v1/notification-channels/{ch['id']}/deliveries")
    rows = (await r.json())["data"]
    assert [(d["kind"], d["status"], d["attempts"]) for d in rows] == [("test", "delivered", 1)]


async def test_the_delivery_log_lists_every_attempt_filtered_by_channel_and_outcome(
    api: aiohttp.ClientSession, receiver: tuple[str, list[web.Request], list[bytes]]
) -> None:
    base, _, _ = receiver
    good = await _create(api, name="good", kind="webhook", config={"url": f"{base}/ok"})
    gone = await _create(api, name="gone", kind="webhook", config={"url": f"{base}/gone"})
    for ch in (good, gone, good):
        assert (await api.post(f"/api/v1/notification-channels/{ch['id']}/test")).status == 200
    r = await api.get("/api/v1/delivery-attempts")
    assert r.status == 200, await r.text()
    rows = (await r.json())["data"]
    assert [(a["channel_id"], a["outcome"], a["status_code"], a["event_kind"]) for a in rows] == [
        (good["id"], "delivered", 200, "test"),
        (gone["id"], "dead", 410, "test"),
        (good["id"], "delivered", 200, "test"),
    ]
    assert "410" in rows[1]["error"] and rows[0]["error"] is None and rows[0]["duration_ms"] >= 0
    r = await api.get("/api/v1/delivery-attempts", params={"channel_id": str(good["id"]), "limit": "1"})
    page = await r.json()
    assert [a["id"] for a in page["data"]] == [rows[0]["id"]] and page["meta"]["has_more"] is True
    r = await api.get(
        "/api/v1/delivery-attempts",
        params={"channel_id": str(good["id"]), "cursor": page["meta"]["next_cursor"]},
    )
    assert [a["id"] for a in (await r.json())["data"]] == [rows[2]["id"]]
    r = await api.get("/api/v1/delivery-attempts", params={"outcome": "dead"})
    assert [a["channel_id"] for a in (await r.json())["data"]] == [gone["id"]]
    r = await api.get("/api/v1/delivery-attempts", params={"incident_id": "1"})
    assert (await r.json())["data"] == []
    r = await api.get(
        "/api/v1/delivery-attempts", params={"outcome": "maybe", "channel_id": "x", "limit": "0"}
    )
    assert r.status == 422
    assert set((await r.json())["error"]["details"]) == {"outcome", "channel_id", "limit"}


async def test_it_reports_a_failed_test_without_disabling(
    api: aiohttp.ClientSession, receiver: tuple[str, list[web.Request], list[bytes]]
) -> None:
    base, _, _ = receiver
    ch = await _create(api, name="gone", kind="webhook", config={"url": f"{base}/gone"})
    out = (await (await api.post(f"/api/v1/notification-channels/{ch['id']}/test")).json())["data"]
    assert out["delivered"] is False and out["permanent"] is True and "410" in out["error"]
    again = (await (await api.get(f"/api/v1/notification-channels/{ch['id']}")).json())["data"]
    assert again["is_enabled"] is True


async def test_it_refuses_channel_urls_to_non_public_addresses(
    database: str, nats_url: str, receiver: tuple[str, list[web.Request], list[bytes]]
) -> None:
    """Private destinations not allowed (the default): 422 naming the field on create and
    update; a channel stored before (or whose name resolves elsewhere since) is refused at
    send time. Nothing is sent anywhere: literals are refused as such, `localhost` resolves
    from /etc/hosts."""
    base, seen, _ = receiver
    port = base.rsplit(":", 1)[1]
    strict = await start_controller(database, nats_url, notification_channels_allow_private=False)
    headers = {"Authorization": f"Bearer {strict.admin_key}"}
    try:
        async with aiohttp.ClientSession(base_url=strict.base, headers=headers) as api:
            refused = [
                ("webhook", {"url": "http://10.0.0.1/hook"}, "config.url"),
                ("slack", {"url": "http://169.254.169.254/latest/meta-data/"}, "config.url"),
                ("discord", {"url": f"http://localhost:{port}/ok"}, "config.url"),
                ("ntfy", {"topic": "t", "server_url": "http://[::1]:9"}, "config.server_url"),
                ("webhook", {"url": "http://[2002:7f00:1::1]:9/hook"}, "config.url"),
                ("webhook", {"url": "http://[fec0::1]:9/hook"}, "config.url"),
                ("webhook", {"url": "http://[64:ff9b::a9fe:a9fe]/hook"}, "config.url"),
                (
                    "telegram",
                    {"bot_token": "1:x", "chat_id": 1, "api_url": "http://127.0.0.1:9"},
                    "config.api_url",
                ),
            ]
            for kind, config, field in refused:
                r = await api.post(
                    "/api/v1/notification-channels", json={"name": kind, "kind": kind, "config": config}
                )
                body = await r.json()
                assert r.status == 422, body
                assert "private, loopback, link-local" in body["error"]["details"][field], body
            assert (await (await api.get("/api/v1/notification-channels")).json())["data"] == []
            # A public literal passes without a lookup; moving it to a private address does not.
            ch = await _create(api, name="pub", kind="webhook", config={"url": "http://93.184.216.34/hook"})
            r = await api.patch(
                f"/api/v1/notification-channels/{ch['id']}", json={"config": {"url": "http://10.0.0.1/hook"}}
            )
            assert r.status == 422 and "config.url" in (await r.json())["error"]["details"]
            pool = strict.app[keys.POOL]
            stored = await pool.fetchval("SELECT config FROM notification_channels WHERE id=$1", ch["id"])
            assert stored["url"] == "http://93.184.216.34/hook"
            for url in (f"http://localhost:{port}/ok", f"http://127.0.0.1:{port}/ok"):
                row = await store.insert_channel(
                    pool,
                    {
                        "kind": "webhook",
                        "name": "old",
                        "is_enabled": True,
                        "reminder_minutes": None,
                        "config": {"kind": "webhook", "url": url},
                    },
                )
                r = await api.post(f"/api/v1/notification-channels/{row['id']}/test")
                out = (await r.json())["data"]
                assert out["delivered"] is False and out["permanent"] is True, out
                assert "destination refused" in out["error"] and "private, loopback" in out["error"], out
    finally:
        await strict.stop()
    assert seen == []


async def test_it_accepts_a_host_that_does_not_resolve_now_with_a_warning(
    database: str, nats_url: str
) -> None:
    """A resolver hiccup or split-horizon DNS must not block configuration: the channel is
    stored with a warning (create, PATCH, PUT); a private literal is still refused. `.invalid`
    never resolves (RFC 6761), so nothing leaves this machine."""
    strict = await start_controller(database, nats_url, notification_channels_allow_private=False)
    headers = {"Authorization": f"Bearer {strict.admin_key}"}
    warning = "host hooks.nonexistent.invalid does not resolve now; it is checked again at every delivery"
    try:
        async with aiohttp.ClientSession(base_url=strict.base, headers=headers) as api:
            body = {
                "name": "later",
                "kind": "webhook",
                "config": {"url": "https://hooks.nonexistent.invalid/x"},
            }
            r = await api.post("/api/v1/notification-channels", json=body)
            created = await r.json()
            assert r.status == 201, created
            assert created["meta"]["warnings"] == [warning]
            path = f"/api/v1/notification-channels/{created['data']['id']}"
            out = (await (await api.post(f"{path}/test")).json())["data"]
            assert out["delivered"] is False and out["permanent"] is False, out
            r = await api.patch(path, json={"name": "renamed"})
            assert r.status == 200 and (await r.json())["meta"]["warnings"] == [warning]
            r = await api.put(path, json={**body, "config": {"url": "https://93.184.216.34/x"}})
            assert r.status == 200 and "warnings" not in (await r.json())["meta"]
            r = await api.put(path, json={**body, "config": {"url": "https://[2002:a00:1::1]/x"}})
            assert r.status == 422 and "config.url" in (await r.json())["error"]["details"]
    finally:
        await strict.stop()


async def test_it_delivers_to_a_loopback_name_when_private_destinations_are_allowed(
    api: aiohttp.ClientSession, receiver: tuple[str, list[web.Request], list[bytes]]
) -> None:
    base, seen, _ = receiver
    url = base.replace("127.0.0.1", "localhost") + "/ok"
    ch = await _create(api, name="lab", kind="webhook", config={"url": url})
    out = (await (await api.post(f"/api/v1/notification-channels/{ch['id']}/test")).json())["data"]
    assert out["delivered"] is True, out
    assert [r.path for r in seen] == ["/ok"]


@pytest.mark.parametrize("ident", ["999", "abc"])
@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("get", "/api/v1/notification-channels/{}", "notification channel"),
        ("patch", "/api/v1/notification-channels/{}", "notification channel"),
        ("put", "/api/v1/notification-channels/{}", "notification channel"),
        ("delete", "/api/v1/notification-channels/{}", "notification channel"),
        ("post", "/api/v1/notification-channels/{}/test", "notification channel"),
        ("get", "/api/v1/notification-channels/{}/deliveries", "notification channel"),
        ("get", "/api/v1/notification-rules/{}", "notification rule"),
        ("patch", "/api/v1/notification-rules/{}", "notification rule"),
        ("put", "/api/v1/notification-rules/{}", "notification rule"),
        ("delete", "/api/v1/notification-rules/{}", "notification rule"),
    ],
)
async def test_it_answers_404_for_an_id_that_names_nothing(
    api: aiohttp.ClientSession, method: str, path: str, what: str, ident: str
) -> None:
    await _create(api, name="one", kind="ntfy", config={"topic": "t"})
    r = await api.request(method, path.format(ident), json={"name": "x"})
    assert r.status == 404, await r.text()
    assert (await r.json())["error"] == {"code": "not_found", "message": f"{what} not found", "details": {}}


async def test_it_patches_disables_and_deletes_channels(api: aiohttp.ClientSession) -> None:
    ch = await _create(api, name="n", kind="ntfy", config={"topic": "alerts"}, reminder_minutes=30)
    r = await api.patch(
        f"/api/v1/notification-channels/{ch['id']}", json={"enabled": False, "config": {"token": "tk_secret"}}
    )
    body = (await r.json())["data"]
    assert r.status == 200 and body["is_enabled"] is False and body["config"]["topic"] == "alerts"
    assert body["config"]["token"] == "<redacted>" and body["reminder_minutes"] == 30
    assert (await api.delete(f"/api/v1/notification-channels/{ch['id']}")).status == 204
    assert (await api.get(f"/api/v1/notification-channels/{ch['id']}")).status == 404


async def test_it_manages_rules(api: aiohttp.ClientSession) -> None:
    a = await _create(api, name="a", kind="ntfy", config={"topic": "a"})
    b = await _create(api, name="b", kind="ntfy", config={"topic": "b"})
    r = await api.post(
        "/api/v1/notification-rules",
        json={
            "name": "prod",
            "events": ["incident.opened", "incident.resolved"],
            "tags": ["prod"],
            "severity": "HIGH",
            "channels": [a["id"]],
            "reminder_minutes": 15,
            "escalate_after_minutes": 10,
            "escalation_channel_ids": [b["id"]],
        },
    )
    assert r.status == 201, await r.text()
    rule = (await r.json())["data"]
    assert rule["min_severity"] == "high" and rule["channel_ids"] == [a["id"]]
    r = await api.patch(f"/api/v1/notification-rules/{rule['id']}", json={"min_severity": None})
    assert (await r.json())["data"]["min_severity"] is None
    assert (await r.json())["data"]["escalation_channel_ids"] == [b["id"]]
    listed = (await (await api.get("/api/v1/notification-rules")).json())["data"]
    assert [x["id"] for x in listed] == [rule["id"]]
    assert (await api.delete(f"/api/v1/notification-rules/{rule['id']}")).status == 204
    assert (await api.get(f"/api/v1/notification-rules/{rule['id']}")).status == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/notification-channels", {"name": "x", "kind": "carrier-pigeon", "config": {}}, "kind"),
        (
            "/api/v1/notification-channels",
            {"name": "x", "kind": "webhook", "config": {"url": "ftp://x"}},
            "config.url",
        ),
        ("/api/v1/notification-channels", {"name": "x", "kind": "webhook", "config": {}}, "config.url"),
        (
            "/api/v1/notification-channels",
            {"name": "x", "kind": "email", "config": {"host": "h", "from": "a@b", "to": ["nope"]}},
            "config.to[0]",
        ),
        (
            "/api/v1/notification-channels",
            {"name": "x", "kind": "slack", "config": {"url": "https://h/x", "colour": 1}},
            "config.colour",
        ),
        ("/api/v1/notification-channels", {"kind": "slack", "config": {"url": "https://h/x"}}, "name"),
        (
            "/api/v1/notification-channels",
            {"name": "x", "kind": "slack", "config": {"url": "https://h/x"}, "bogus": 1},
            "bogus",
        ),
        ("/api/v1/notification-rules", {"channel_ids": [999]}, "channel_ids[0]"),
        ("/api/v1/notification-rules", {"channel_ids": []}, "channel_ids"),
        ("/api/v1/notification-rules", {"channel_ids": [1], "events": ["monitor.exploded"]}, "events[0]"),
        ("/api/v1/notification-rules", {"channel_ids": [1], "min_severity": "apocalyptic"}, "min_severity"),
        (
            "/api/v1/notification-rules",
            {"channel_ids": [1], "escalate_after_minutes": 5},
            "escalation_channel_ids",
        ),
    ],
    ids=[
        "unknown-kind",
        "bad-url",
        "missing-url",
        "bad-address",
        "unknown-config-field",
        "no-name",
        "unknown-field",
        "no-channel",
        "empty-channels",
        "bad-event",
        "bad-severity",
        "escalation-no-target",
    ],
)
async def test_it_rejects_bad_bodies_with_field_paths(
    api: aiohttp.ClientSession, path: str, body: dict[str, object], field: str
) -> None:
    await _create(api, name="c1", kind="ntfy", config={"topic": "t"})
    r = await api.post(path, json=body)
    assert r.status == 422, await r.text()
    assert field in (await r.json())["error"]["details"], await r.text()


async def test_it_requires_notification_scopes(controller: Running) -> None:
    pool = controller.app[keys.POOL]
    reader, _ = await api_keys.create(pool, "reader", ["notifications:read"])
    other, _ = await api_keys.create(pool, "other", ["monitors:read"])
    async with aiohttp.ClientSession(base_url=controller.base) as s:
        auth = {"Authorization": f"Bearer {reader}"}
        assert (await s.get("/api/v1/notification-channels", headers=auth)).status == 200
        r = await s.post(
            "/api/v1/notification-channels",
            headers=auth,
            json={"name": "x", "kind": "ntfy", "config": {"topic": "t"}},
        )
        assert r.status == 403
        r = await s.get("/api/v1/notification-rules", headers={"Authorization": f"Bearer {other}"})
        assert r.status == 403
        assert (await s.get("/api/v1/notification-rules")).status == 401


async def test_a_monitor_carries_its_notification_channels(api: aiohttp.ClientSession) -> None:
    ch = await _create(api, name="own", kind="ntfy", config={"topic": "t"})
    r = await api.post(
        "/api/v1/monitors", json={"name": "m", "url": "http://127.0.0.1:9/", "notifications": [ch["id"]]}
    )
    assert r.status == 201, await r.text()
    mon = (await r.json())["data"]
    assert mon["notifications"] == [ch["id"]]
    r = await api.patch(f"/api/v1/monitors/{mon['id']}", json={"notifications": []})
    assert (await r.json())["data"]["notifications"] == []
    r = await api.post(
        "/api/v1/monitors", json={"name": "m", "url": "http://127.0.0.1:9/", "notifications": [0]}
    )
    assert r.status == 422 and "notifications[0]" in (await r.json())["error"]["details"]


async def test_monitor_channel_ids_must_exist(api: aiohttp.ClientSession) -> None:
    status, body = await _post(
        api,
        "/api/v1/notification-channels",
        {"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
    )
    cid = body["data"]["id"]
    http = {"name": "web", "type": "http", "url": "https://example.com/"}
    status, body = await _post(api, "/api/v1/monitors", {**http, "notifications": [cid, 999999]})
    assert status == 422 and body["error"]["details"] == {"notifications[1]": "no such notification channel"}
    status, body = await _post(
        api, "/api/v1/heartbeats", {"name": "hb", "run_interval": 60, "notifications": [999999]}
    )
    assert status == 422 and "notifications[0]" in body["error"]["details"]
    status, body = await _post(api, "/api/v1/monitors", {**http, "notifications": [cid]})
    assert status == 201 and body["data"]["notifications"] == [cid]
    mid = body["data"]["id"]
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"notifications": [cid, cid + 1000]})
    assert r.status == 422 and "notifications[1]" in (await r.json())["error"]["details"]
    bulk = {"action": "update", "monitor_ids": [mid], "updates": {"notifications": [cid + 1000]}}
    r = await api.post("/api/v1/monitors/bulk", json=bulk)
    assert r.status == 422 and "notifications[0]" in (await r.json())["error"]["details"]["monitor_ids[0]"]
    # Deleting the channel drops it from the monitor, which stays editable.
    assert (await api.delete(f"/api/v1/notification-channels/{cid}")).status == 204
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"name": "web 2"})
    assert r.status == 200 and (await r.json())["data"]["notifications"] == []


async def test_monitors_take_an_escalation_policy_by_name_or_id(api: aiohttp.ClientSession) -> None:
    _, body = await _post(
        api,
        "/api/v1/notification-channels",
        {"name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}},
    )
    cid = body["data"]["id"]
    status, body = await _post(
        api,
        "/api/v1/notification-rules",
        {
            "name": "oncall_senior",
            "policy": True,
            "channels": [cid],
            "escalate_after_minutes": 15,
            "escalation_channels": [cid],
        },
    )
    assert status == 201 and body["data"]["is_policy"] is True
    policy = body["data"]["id"]
    # The create example of docs/api.md (escalation policies), with a channel id in notifications.
    status, body = await _post(
        api,
        "/api/v1/monitors",
        {
            "name": "Checkout Service Gateway",
            "type": "http",
            "url": "https://api.example.com/v2/health",
            "interval_seconds": 30,
            "expected_status": 200,
            "escalation_policy": "oncall_senior",
            "notifications": [cid],
        },
    )
    assert status == 201 and body["data"]["escalation_policy"] == policy
    mid = body["data"]["id"]
    r = await api.put(f"/api/v1/monitors/{mid}/config", json={"timeout": 5})
    assert r.status == 200 and (await r.json())["data"]["escalation_policy"] == policy
    for ref, problem in (
        ("nobody", "no notification rule with this name"),
        (policy + 100, "no notification rule with this id"),
    ):
        r = await api.patch(f"/api/v1/monitors/{mid}", json={"escalation_policy": ref})
        assert r.status == 422 and (await r.json())["error"]["details"] == {"escalation_policy": problem}
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"escalationPolicy": None})
    assert r.status == 200 and (await r.json())["data"]["escalation_policy"] is None
