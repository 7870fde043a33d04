"""/api/v1/monitors: the happy paths and every kind of bad request; pause/resume, config,
bulk, filters, both page styles over changing data, logs/history, alert settings, and running
a check now on real probes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.engine import results
from probefleet.controller.storage import notifications as notification_store
from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig
from probefleet.shared import wire
from tests.controller.conftest import Running
from tests.helpers import eventually

HTTP_MONITOR = {
    "name": "site",
    "url": "http://127.0.0.1:9/x",
    "check_interval": 30,
    "locations": ["us-east", "eu-west"],
}

# HTTP_MONITOR with the default interval.
M = {k: v for k, v in HTTP_MONITOR.items() if k != "check_interval"}


async def create(api: aiohttp.ClientSession, **fields: Any) -> dict[str, Any]:
    body = {k: v for k, v in {**M, **fields}.items() if v is not None}  # None drops a default
    r = await api.post("/api/v1/monitors", json=body)
    assert r.status == 201, await r.text()
    return (await r.json())["data"]  # type: ignore[no-any-return]


async def data(r: aiohttp.ClientResponse) -> Any:
    body = await r.json()
    assert r.status < 300, body
    return body["data"]


async def events_of(controller: Running, monitor_id: int) -> list[tuple[str, dict[str, Any]]]:
    rows = await controller.app[keys.POOL].fetch(
        "SELECT kind, payload FROM events WHERE monitor_id = $1 ORDER BY id", monitor_id
    )
    return [(r["kind"], r["payload"]) for r in rows]


async def test_it_creates_reads_lists_and_deletes_a_monitor(api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/monitors", json=HTTP_MONITOR)
    assert r.status == 201
    created = (await r.json())["data"]
    assert created["name"] == "site" and created["type"] == "http"
    assert created["locations"] == ["us-east", "eu-west"]
    assert created["status"] == "pending" and created["expected_status"] == ["2xx", "3xx"]
    r = await api.get(f"/api/v1/monitors/{created['id']}")
    assert (await r.json())["data"]["url"] == HTTP_MONITOR["url"]
    r = await api.get("/api/v1/monitors")
    assert [m["id"] for m in (await r.json())["data"]] == [created["id"]]
    r = await api.delete(f"/api/v1/monitors/{created['id']}")
    assert r.status == 204
    r = await api.get(f"/api/v1/monitors/{created['id']}")
    assert r.status == 404


async def test_a_flapping_monitor_shows_it_with_the_percent_that_started_it(
    api: aiohttp.ClientSession, controller: Running
) -> None:
    steady, flappy = (await create(api, name="steady"))["id"], (await create(api, name="flappy"))["id"]
    assert (await data(await api.get(f"/api/v1/monitors/{steady}")))["flapping"] is False
    pool = controller.app[keys.POOL]
    # The dispatcher's own write (judge_flapping), as when a flap starts at 34.2 %.
    assert await notification_store.set_flapping(pool, flappy, True, 34.24, dt.datetime.now(dt.UTC))
    shown = await data(await api.get(f"/api/v1/monitors/{flappy}"))
    assert shown["flapping"] is True and shown["flap_percent"] == 34.2
    listed = {m["id"]: m for m in await data(await api.get("/api/v1/monitors"))}
    assert (listed[flappy]["flapping"], listed[flappy]["flap_percent"]) == (True, 34.2)
    assert (listed[steady]["flapping"], listed[steady]["flap_percent"]) == (False, None)
    patched = await data(await api.patch(f"/api/v1/monitors/{flappy}", json={"name": "still flappy"}))
    assert patched["flapping"] is True and patched["flap_percent"] == 34.2
    # Settled: the row stays, with the percent that stopped it, and the monitor is not flapping.
    assert await notification_store.set_flapping(pool, flappy, False, 20.0, dt.datetime.now(dt.UTC))
    shown = await data(await api.get(f"/api/v1/monitors/{flappy}"))
    assert (shown["flapping"], shown["flap_percent"]) == (False, None)


async def test_it_patches_and_puts(api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/monitors", json=HTTP_MONITOR)
    mid = (await r.json())["data"]["id"]
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"method": "HEAD", "interval": 5})
    body = (await r.json())["data"]
    assert r.status == 200 and body["method"] == "HEAD" and body["check_interval"] == 5
    assert body["url"] == HTTP_MONITOR["url"]
    # PUT changes the given fields too: every reference documents it so.
    r = await api.put(f"/api/v1/monitors/{mid}", json={"name": "n2", "url": "https://127.0.0.1/"})
    body = (await r.json())["data"]
    assert body["name"] == "n2" and body["method"] == "HEAD" and body["check_interval"] == 5
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"is_enabled": False})
    assert (await r.json())["data"]["status"] == "paused"


async def test_it_accepts_reference_aliases(api: aiohttp.ClientSession) -> None:
    r = await api.post(
        "/api/v1/monitors",
        json={
            "name": "a",
            "type": "website",
            "target": "http://127.0.0.1/",
            "interval": 15,
            "regions": ["ap-south"],
        },
    )
    body = (await r.json())["data"]
    assert r.status == 201 and body["type"] == "http" and body["check_interval"] == 15
    assert body["locations"] == ["ap-south"]


async def test_it_pages_with_a_cursor(api: aiohttp.ClientSession) -> None:
    ids = []
    for i in range(5):
        r = await api.post("/api/v1/monitors", json={**HTTP_MONITOR, "name": f"m{i}"})
        ids.append((await r.json())["data"]["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = await (await api.get("/api/v1/monitors", params=params)).json()
        seen += [m["id"] for m in body["data"]]
        cursor = body["meta"]["next_cursor"]
        if not body["meta"]["has_more"]:
            break
    assert seen == ids


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1/"}, "name"),
        ({"name": "x", "url": "ftp://127.0.0.1/"}, "url"),
        ({"name": "x", "url": "http://127.0.0.1/", "timeout": "slow"}, "timeout"),
        ({"name": "x", "url": "http://127.0.0.1/", "check_interval": 0}, "check_interval"),
        ({"name": "x", "url": "http://127.0.0.1/", "locations": ["mars"]}, "locations[0]"),
        ({"name": "x", "url": "http://127.0.0.1/", "expected_status": [999]}, "expected_status[0]"),
        ({"name": "x", "url": "http://127.0.0.1/", "colour": "red"}, "colour"),
        ({"name": "x", "type": "nope"}, "type"),
        ({"name": "x", "type": "tcp", "host": "127.0.0.1", "port": 70000}, "port"),
        ({"name": "x", "url": "http://127.0.0.1/", "consensus": "quorum"}, "quorum"),
    ],
    ids=[
        "missing-name",
        "bad-scheme",
        "wrong-type",
        "zero-interval",
        "unknown-region",
        "bad-status",
        "unknown-field",
        "unknown-type",
        "bad-port",
        "quorum-without-n",
    ],
)
async def test_it_rejects_invalid_monitors_with_field_details(
    api: aiohttp.ClientSession, body: dict[str, object], field: str
) -> None:
    r = await api.post("/api/v1/monitors", json=body)
    assert r.status == 422
    err = (await r.json())["error"]
    assert err["code"] == "validation_error" and field in err["details"], err


async def test_it_rejects_invalid_json(api: aiohttp.ClientSession) -> None:
    for raw in (b"{not json", b"", b"[1,2]"):
        r = await api.post("/api/v1/monitors", data=raw, headers={"Content-Type": "application/json"})
        assert r.status in (400, 422)
        assert "error" in await r.json()


async def test_it_answers_unknown_ids_with_404(api: aiohttp.ClientSession) -> None:
    for path in ("/api/v1/monitors/999999", "/api/v1/monitors/abc"):
        r = await api.get(path)
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await api.patch("/api/v1/monitors/424242", json={"name": "x"})
    assert r.status == 404


async def test_it_requires_a_valid_key(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/v1/monitors")
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
        r = await anon.get("/api/v1/monitors", headers={"Authorization": "Bearer pf_wrongwrongwrongwrong"})
        assert r.status == 401
        r = await anon.get("/api/v1/monitors", headers={"X-API-Key": controller.admin_key})
        assert r.status == 200
        r = await anon.get("/api/v1/health")
        assert r.status == 200 and (await r.json())["status"] == "ok"
        r = await anon.get("/metrics")
        assert r.status == 200 and "probefleet_results_stored_total" in await r.text()


async def test_it_enforces_scopes(controller: Running) -> None:
    from probefleet.controller import keys
    from probefleet.controller.storage import api_keys

    key, _ = await api_keys.create(controller.app[keys.POOL], "ro", ["monitors:read"])
    async with aiohttp.ClientSession(
        base_url=controller.base, headers={"Authorization": f"Bearer {key}"}
    ) as ro:
        assert (await ro.get("/api/v1/monitors")).status == 200
        r = await ro.post("/api/v1/monitors", json=HTTP_MONITOR)
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"type": "dns", "domain": "example.test", "record_type": "MX"}, {"domain": "example.test"}),
        (
            {"type": "ping", "target": "127.0.0.1", "ping_interval": 0.5, "count": 2},
            {"type": "icmp", "host": "127.0.0.1", "ping_interval": 0.5},
        ),
        (
            {"type": "port", "target": "tcp://127.0.0.1:5432", "port": 5432},
            {"type": "tcp", "host": "127.0.0.1"},
        ),
        ({"type": "port", "protocol": "udp", "host": "127.0.0.1", "port": 53}, {"type": "udp", "port": 53}),
        (
            {"type": "ssl_cert", "url": "https://127.0.0.1/"},
            {"type": "tls", "host": "127.0.0.1", "port": 443},
        ),
    ],
    ids=["dns-domain", "ping-target", "port-tcp", "port-udp", "ssl-url"],
)
async def test_it_creates_every_probe_kind_with_reference_names(
    api: aiohttp.ClientSession, body: dict[str, object], want: dict[str, object]
) -> None:
    r = await api.post("/api/v1/monitors", json={"name": "k", **body})
    created = await r.json()
    assert r.status == 201, created
    data = created["data"]
    assert data["name"] == "k"
    for key, value in want.items():
        assert data[key] == value, (key, data)


async def test_it_never_returns_credentials_and_keeps_them_on_update(api: aiohttp.ClientSession) -> None:
    secret_body = {
        "name": "private",
        "url": "https://ops:hunter2@127.0.0.1/health",
        "bearer_token": "tok-s3cret",
        "basic_auth": ["ops", "pa55word"],
        "headers": {"Authorization": "Bearer abc-s3cret", "X-Trace": "visible"},
    }
    r = await api.post("/api/v1/monitors", json=secret_body)
    assert r.status == 201
    text = await r.text()
    for secret in ("hunter2", "tok-s3cret", "pa55word", "abc-s3cret"):
        assert secret not in text
    shown = (await r.json())["data"]
    assert shown["headers"]["X-Trace"] == "visible" and shown["basic_auth"][0] == "ops"
    # A client that PUTs back what it was shown keeps the stored secrets.
    editable = {k: shown[k] for k in ("name", "url", "bearer_token", "basic_auth", "headers")}
    r = await api.put(f"/api/v1/monitors/{shown['id']}", json={**editable, "name": "renamed"})
    assert r.status == 200
    for secret in ("hunter2", "tok-s3cret", "pa55word", "abc-s3cret"):
        assert secret not in await r.text()
    listing = await (await api.get("/api/v1/monitors")).text()
    assert "hunter2" not in listing and "tok-s3cret" not in listing


async def test_it_stores_the_secrets_the_probes_need(controller: Running, api: aiohttp.ClientSession) -> None:
    from probefleet.controller import keys

    r = await api.post(
        "/api/v1/monitors", json={"name": "p", "url": "http://127.0.0.1/", "bearer_token": "t0k"}
    )
    mid = (await r.json())["data"]["id"]
    r = await api.patch(f"/api/v1/monitors/{mid}", json={"bearer_token": "<redacted>", "method": "HEAD"})
    assert r.status == 200
    spec = await controller.app[keys.POOL].fetchval("SELECT spec FROM monitors WHERE id = $1", mid)
    assert spec["bearer_token"] == "t0k" and spec["method"] == "HEAD"


async def test_it_redacts_secret_query_values_and_headers_everywhere_and_keeps_them(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    url = "https://u:pw-s3cret@127.0.0.1/feed?page=2&token=tok-s3cret&apiKey=key-s3cret&sid=sid-s3cret"
    headers = {
        "X-Api-Key": "hdr1-s3cret",
        "Cookie": "c=hdr2-s3cret",
        "X-Client-Secret": "hdr3-s3cret",
        "X-Mine": "hdr4-s3cret",
        "X-Trace": "visible",
    }
    body = {
        "name": "s",
        "url": url,
        "headers": headers,
        "secret_headers": ["x-mine"],
        "secret_params": ["sid"],
    }
    secrets = ("pw-s3cret", "tok-s3cret", "key-s3cret", "sid-s3cret", "hdr1-s3cret", "hdr2-s3cret")
    secrets += ("hdr3-s3cret", "hdr4-s3cret")
    shown = await create(api, **body)
    assert not [s for s in secrets if s in str(shown)], shown
    assert shown["url"] == (
        "https://u:<redacted>@127.0.0.1/feed?page=2&token=<redacted>&apiKey=<redacted>&sid=<redacted>"
    )
    assert shown["headers"] == {**dict.fromkeys(list(headers)[:4], "<redacted>"), "X-Trace": "visible"}

    # Sending back what was shown keeps every stored secret; a new value replaces one.
    editable = {k: shown[k] for k in ("name", "url", "headers", "secret_headers", "secret_params")}
    editable["url"] = editable["url"].replace("page=2", "page=3")
    r = await api.put(f"/api/v1/monitors/{shown['id']}", json=editable)
    assert r.status == 200 and not [s for s in secrets if s in await r.text()]
    r = await api.patch(
        f"/api/v1/monitors/{shown['id']}", json={"headers": {**shown["headers"], "X-Mine": "new"}}
    )
    assert r.status == 200
    spec = await controller.app[keys.POOL].fetchval("SELECT spec FROM monitors WHERE id = $1", shown["id"])
    assert spec["url"] == url.replace("page=2", "page=3")
    assert spec["headers"] == {**headers, "X-Mine": "new"}

    # Event payloads (and so notifications) carry the same redacted URL.
    await data(await api.post(f"/api/v1/monitors/{shown['id']}/pause"))
    (kind, payload), *_ = await events_of(controller, shown["id"])
    assert kind == "monitor.paused" and not [s for s in secrets if s in str(payload)], payload
    assert payload["monitor"]["target"].endswith("page=3&token=<redacted>&apiKey=<redacted>&sid=<redacted>")
    listing = await (await api.get("/api/v1/monitors")).text()
    assert not [s for s in secrets if s in listing]


async def test_a_read_only_key_cannot_find_a_secret_through_search(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    from probefleet.controller.storage import api_keys

    await create(api, name="guarded", url="https://urluser:Unguessable1@127.0.0.1/p?token=T0ken&q=v")
    key, _ = await api_keys.create(controller.app[keys.POOL], "ro", ["monitors:read"])
    async with aiohttp.ClientSession(
        base_url=controller.base, headers={"Authorization": f"Bearer {key}"}
    ) as ro:

        async def hits(text: str) -> int:
            return len(await data(await ro.get("/api/v1/monitors", params={"search": text})))

        assert await hits("urluser:") == 1 and await hits("127.0.0.1/p?token=") == 1
        for probe in ("urluser:U", "Unguessable", "token=T", "T0ken", "redacted"):
            assert await hits(probe) == 0, probe


LIMIT_URL = "http://127.0.0.1/"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
        ({"tags": ["x" * 65]}, "tags[0]"),
        ({"url": LIMIT_URL + "a" * 2048}, "url"),
        ({"url": "http://127.0.0.1:99999/"}, "url"),
        ({"url": "http://127.0.0.1:0/"}, "url"),
        ({"url": "http://[::1/"}, "url"),
        ({"type": "tcp", "url": "tcp://[::1", "port": 80}, "host"),
        ({"url": "http://127.0.0.1/a\r\nX-Injected: 1"}, "url"),
        ({"headers": {f"X-H{i}": "v" for i in range(51)}}, "headers"),
        ({"headers": {"X-A": "a\r\nX-Injected: 1"}}, "headers.X-A"),
        ({"headers": {"X-A": "a\nb"}}, "headers.X-A"),
        ({"headers": {"X-A": "a\u0000b"}}, "headers.X-A"),
        ({"headers": {"X-A\r\nX-B": "v"}}, "headers.X-A\r\nX-B"),
        ({"headers": {"X A": "v"}}, "headers.X A"),
        ({"headers": {"X-" + "a" * 300: "v"}}, "headers." + ("X-" + "a" * 300)[:256]),
        ({"headers": {"X-A": "v" * 8193}}, "headers.X-A"),
        ({"headers": {"Content-Length": "5"}}, "headers.Content-Length"),
        ({"headers": {"transfer-encoding": "chunked"}}, "headers.transfer-encoding"),
        ({"headers": {"Connection": "close"}}, "headers.Connection"),
        ({"headers": {"Upgrade": "h2c"}}, "headers.Upgrade"),
        ({"headers": {"TE": "trailers"}}, "headers.TE"),
        ({"headers": {"Host": "a.test", "host": "b.test"}}, "headers.host"),
        ({"bearer_token": "t\r\nX-Injected: 1"}, "bearer_token"),
        ({"bearer_token": "t\u0000"}, "bearer_token"),
        ({"basic_auth": ["us:er", "pw"]}, "basic_auth"),
        ({"body": "b" * (64 * 1024 + 1), "method": "POST"}, "body"),
        ({"method": "G" * 17}, "method"),
        ({"secret_params": [f"p{i}" for i in range(51)]}, "secret_params"),
        ({"expected_status": [200] * 51}, "expected_status"),
        ({"ca_pem": "x" * (64 * 1024 + 1)}, "ca_pem"),
        (
            {
                "body": "b" * 60_000,
                "ca_pem": "c" * 60_000,
                "expected_content": "e" * 60_000,
                "excluded_content": "x" * 60_000,
                "graphql_query": "q" * 60_000,
            },
            "spec",
        ),
        ({"type": "tcp", "host": "127.0.0.1", "port": 99999, "url": None}, "port"),
        ({"type": "tcp", "host": "h\r\nx", "port": 80, "url": None}, "host"),
        ({"locations": ["us-east"] * 65}, "locations"),
        ({"notifications": list(range(1, 52))}, "notifications"),
    ],
    ids=[
        "51-tags",
        "long-tag",
        "long-url",
        "url-port-99999",
        "url-port-0",
        "unclosed-ipv6",
        "tcp-unclosed-ipv6",
        "crlf-in-url",
        "51-headers",
        "crlf-in-header-value",
        "lf-in-header-value",
        "nul-in-header-value",
        "crlf-in-header-name",
        "space-in-header-name",
        "long-header-name",
        "long-header-value",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "host-twice",
        "crlf-in-bearer",
        "nul-in-bearer",
        "colon-in-basic-user",
        "64k-body",
        "long-method",
        "51-secret-params",
        "51-statuses",
        "long-ca-pem",
        "256k-spec",
        "tcp-port-99999",
        "crlf-in-host",
        "65-locations",
        "51-channels",
    ],
)
async def test_it_refuses_monitors_beyond_the_limits_with_the_field(
    api: aiohttp.ClientSession, fields: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**M, "url": LIMIT_URL, **fields}.items() if v is not None}
    r = await api.post("/api/v1/monitors", json=body)
    err = (await r.json())["error"]
    assert r.status == 422 and err["code"] == "validation_error", err
    assert field in err["details"], err["details"]


async def test_it_accepts_monitors_at_the_limits_and_a_host_header(api: aiohttp.ClientSession) -> None:
    m = await create(
        api,
        url=LIMIT_URL + "a" * (2048 - len(LIMIT_URL)),
        tags=[f"{i:02}" + "t" * 62 for i in range(50)],
        # 50 headers, 20 of the longest value: within the whole spec's 256 KiB
        headers={"Host": "vhost.test", **{f"X-H{i}": "v" * (8192 if i < 20 else 1) for i in range(49)}},
        bearer_token="t" * 4096,
        method="POST",
        body="b" * 64 * 1024,
    )
    assert len(m["tags"]) == 50 and m["headers"]["Host"] == "vhost.test"


async def test_metrics_count_an_aliased_request_under_its_v1_route(controller: Running) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    series = 'probefleet_http_requests_total{method="GET",route="/api/v1/monitors",status="200"}'

    async def count(s: aiohttp.ClientSession) -> tuple[float, str]:
        # The registry is the process's: other tests in it count too, so compare counts.
        text = await (await s.get("/metrics")).text()
        values = [
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " ")
        ]
        return (values[0] if values else 0.0), text

    async with aiohttp.ClientSession(base_url=controller.base, headers=headers) as s:
        before, _ = await count(s)
        for path in ("/api/v1/monitors", "/api/monitors", "/v1/monitors"):
            assert (await s.get(path)).status == 200
        after, text = await count(s)
    assert after - before == 3
    assert 'route="/api/monitors"' not in text and 'route="/v1/monitors"' not in text


# ---- beyond CRUD ------------------------------------------------------------------------


async def test_it_pauses_and_resumes_with_a_reason(controller: Running, api: aiohttp.ClientSession) -> None:
    m = await create(api)
    assert m["id"] in controller.app[keys.SCHEDULER].entries
    p = await data(await api.post(f"/api/v1/monitors/{m['id']}/pause", json={"reason": "maintenance"}))
    assert p["status"] == "paused" and not p["is_enabled"] and p["paused_reason"] == "maintenance"
    assert m["id"] not in controller.app[keys.SCHEDULER].entries
    again = await data(await api.post(f"/api/v1/monitors/{m['id']}/pause"))
    assert again["paused_reason"] == "maintenance"  # idempotent, no second event
    r = await data(await api.post(f"/api/v1/monitors/{m['id']}/resume"))
    assert r["status"] == "pending" and r["is_enabled"] and r["paused_reason"] is None
    assert m["id"] in controller.app[keys.SCHEDULER].entries
    evs = await events_of(controller, m["id"])
    assert [k for k, _ in evs] == ["monitor.paused", "monitor.resumed"]
    assert evs[0][1]["reason"] == "maintenance" and evs[0][1]["previous_status"] == "pending"
    assert evs[0][1]["monitor"]["target"] == M["url"]
    r2 = await api.post(f"/api/v1/monitors/{m['id']}/pause", json={"reason": 5})
    assert r2.status == 422 and "reason" in (await r2.json())["error"]["details"]
    assert (await api.post("/api/v1/monitors/999999/pause")).status == 404


async def test_it_updates_config_in_place(api: aiohttp.ClientSession) -> None:
    m = await create(api)
    c = await data(
        await api.put(
            f"/api/v1/monitors/{m['id']}/config", json={"timeout_seconds": 3, "expectedStatusCode": 204}
        )
    )
    assert c["timeout"] == 3 and c["expected_status"] == [204] and c["url"] == M["url"]
    r = await api.put(f"/api/v1/monitors/{m['id']}/config", json={"check_interval": -1})
    assert r.status == 422


async def test_bulk_is_all_or_nothing(controller: Running, api: aiohttp.ClientSession) -> None:
    a, b = await create(api, name="a"), await create(api, name="b")
    r = await api.post("/api/v1/monitors/bulk", json={"action": "pause", "monitor_ids": [a["id"], 999999]})
    assert r.status == 422
    assert (await r.json())["error"]["details"] == {"monitor_ids[1]": "no such monitor"}
    assert (await data(await api.get(f"/api/v1/monitors/{a['id']}")))["status"] == "pending"
    out = await data(
        await api.post(
            "/api/v1/monitors/bulk",
            json={"action": "pause", "monitor_ids": [a["id"], b["id"]], "reason": "window"},
        )
    )
    assert out["count"] == 2 and {m["status"] for m in out["monitors"]} == {"paused"}
    out = await data(
        await api.post("/api/v1/monitors/bulk", json={"action": "resume", "monitor_ids": [a["id"], b["id"]]})
    )
    assert {m["status"] for m in out["monitors"]} == {"pending"}
    # One invalid update rolls back the others.
    t = await create(api, name="t", type="tcp", url=None, host="127.0.0.1", port=9)
    r = await api.put(
        "/api/v1/monitors/bulk", json={"monitor_ids": [a["id"], t["id"]], "updates": {"method": "HEAD"}}
    )
    assert r.status == 422 and "monitor_ids[1]" in (await r.json())["error"]["details"]
    assert (await data(await api.get(f"/api/v1/monitors/{a['id']}")))["method"] == "GET"
    out = await data(
        await api.put(
            "/api/v1/monitors/bulk",
            json={"monitor_ids": [a["id"], b["id"]], "updates": {"check_interval": 600, "is_enabled": True}},
        )
    )
    assert {m["check_interval"] for m in out["monitors"]} == {600}
    out = await data(
        await api.post("/api/v1/monitors/bulk", json={"action": "delete", "monitor_ids": [a["id"], b["id"]]})
    )
    assert (await api.get(f"/api/v1/monitors/{a['id']}")).status == 404
    assert a["id"] not in controller.app[keys.SCHEDULER].entries
    r = await api.post("/api/v1/monitors/bulk", json={"action": "explode", "monitor_ids": [t["id"]]})
    assert r.status == 422 and "action" in (await r.json())["error"]["details"]
    r = await api.post("/api/v1/monitors/bulk", json={"action": "update", "monitor_ids": [t["id"]]})
    assert r.status == 422 and "updates" in (await r.json())["error"]["details"]


async def test_it_filters_and_sorts(api: aiohttp.ClientSession) -> None:
    web_ = await create(api, name="shop front", tags=["prod", "web"], project="shop")
    api_ = await create(api, name="payments api", url="http://127.0.0.1:9/pay", tags=["prod"])
    tcp = await create(api, name="db", type="port", url=None, host="127.0.0.1", port=5432, tags=["db"])
    await api.post(f"/api/v1/monitors/{tcp['id']}/pause")

    async def ids(**params: str) -> list[int]:
        return [m["id"] for m in await data(await api.get("/api/v1/monitors", params=params))]

    assert await ids(search="shop") == [web_["id"]]
    assert await ids(search="/pay") == [api_["id"]]
    assert await ids(tag="prod") == [web_["id"], api_["id"]]
    assert await ids(tag="prod,web") == [web_["id"]]
    assert await ids(type="port") == [tcp["id"]] == await ids(type="tcp")
    assert await ids(status="paused") == [tcp["id"]] == await ids(is_enabled="false")
    assert await ids(status="online") == [] and await ids(status="pending,paused") == await ids()
    assert await ids(project="shop") == [web_["id"]]
    assert await ids(created_after="2000-01-01") == await ids()
    assert await ids(created_after="2999-01-01T00:00:00Z") == []
    assert await ids(sort="name:asc") == [tcp["id"], api_["id"], web_["id"]]
    assert await ids(sort="id:desc") == [tcp["id"], api_["id"], web_["id"]]
    for bad in (
        {"status": "sideways"},
        {"sort": "colour:asc"},
        {"sort": "name:up"},
        {"limit": "101"},
        {"created_after": "yesterday"},
        {"type": "nope"},
        {"cursor": "!!"},
    ):
        r = await api.get("/api/v1/monitors", params=bad)
        assert r.status == 422, bad
    first = (await data(await api.get("/api/v1/monitors")))[0]
    for field in (
        "status",
        "is_ok",
        "uptime_24h",
        "uptime_7d",
        "uptime_30d",
        "response_time",
        "last_check",
        "last_success",
        "last_failure",
        "locations",
        "tags",
        "created_at",
        "updated_at",
    ):
        assert field in first


async def test_page_style_reports_totals(api: aiohttp.ClientSession) -> None:
    for i in range(5):
        await create(api, name=f"m{i}")
    body = await (await api.get("/api/v1/monitors", params={"page": "2", "limit": "2"})).json()
    assert [m["name"] for m in body["data"]] == ["m2", "m3"]
    assert body["pagination"] == {
        "page": 2,
        "limit": 2,
        "total": 5,
        "pages": 3,
        "has_next": True,
        "has_previous": True,
    }


@pytest.mark.parametrize("sort", ["id:asc", "name:desc", "created_at:desc", "updated_at:asc", "uptime:desc"])
async def test_the_cursor_stays_stable_while_pages_change(api: aiohttp.ClientSession, sort: str) -> None:
    made = [await create(api, name=f"n{i:02d}") for i in range(9)]
    seen: list[int] = []
    cursor: str | None = None
    removed: set[int] = set()
    step = 0
    while True:
        params = {"limit": "3", "sort": sort, **({"cursor": cursor} if cursor else {})}
        body = await (await api.get("/api/v1/monitors", params=params)).json()
        seen += [m["id"] for m in body["data"]]
        step += 1
        if step == 1:  # between pages: delete one not yet seen, add one, touch one already seen
            victim = next(m["id"] for m in made if m["id"] not in seen)
            assert (await api.delete(f"/api/v1/monitors/{victim}")).status == 204
            removed.add(victim)
            await create(api, name="n99")
        if not body["meta"]["has_more"]:
            break
        cursor = body["meta"]["next_cursor"]
        assert body["meta"]["nextCursor"] == cursor
    assert len(seen) == len(set(seen)), "no monitor twice"
    assert {m["id"] for m in made} - removed <= set(seen), "no monitor that existed throughout is skipped"
    r = await api.get("/api/v1/monitors", params={"cursor": cursor or "x", "sort": "status:asc"})
    assert r.status == 422


async def test_logs_and_history_per_region(controller: Running, api: aiohttp.ClientSession) -> None:
    m = await create(api, check_interval=86400)  # no scheduled round lands in the test
    pool = controller.app[keys.POOL]
    # A whole second: PostgreSQL's to_timestamp and the results' datetime.fromtimestamp
    # round some raw float times to neighbouring microseconds, and the round would not match.
    due = float(int(time.time()) - 30)
    await pool.execute(
        "INSERT INTO rounds (monitor_id, due, attempt, regions, deadline) VALUES"
        " ($1, to_timestamp($2), 0, $3, to_timestamp($2 + 3600))",  # the sweeper must not close it first
        m["id"],
        due,
        ["us-east", "eu-west"],
    )
    res = [
        wire.CheckResult(
            monitor_id=m["id"],
            due=due,
            region=r,
            probe_id=f"p-{r}",
            status=s,
            started_at=due,
            duration_ms=d,
            status_code=c,
            reason=wire.Reason.STATUS_MISMATCH if s == wire.Status.FAIL else None,
            message="" if c == 200 else "status 500",
        )
        for r, s, d, c in (("us-east", wire.Status.OK, 12.5, 200), ("eu-west", wire.Status.FAIL, 40.0, 500))
    ]
    await results.ingest(pool, res)
    logs = await data(await api.get(f"/api/v1/monitors/{m['id']}/logs"))
    assert {(x["region"], x["status"], x["status_code"]) for x in logs} == {
        ("us-east", "ok", 200),
        ("eu-west", "fail", 500),
    }
    only = await data(await api.get(f"/api/v1/monitors/{m['id']}/logs", params={"region": "eu-west"}))
    assert [x["error"] for x in only] == ["status 500"]
    day = time.strftime("%Y-%m-%d", time.gmtime(due))
    ranged = await data(
        await api.get(f"/api/v1/monitors/{m['id']}/logs", params={"start_date": day, "end_date": day})
    )
    assert len(ranged) == 2
    assert (
        await data(
            await api.get(
                f"/api/v1/monitors/{m['id']}/logs", params={"from": "2001-01-01", "to": "2001-01-02"}
            )
        )
        == []
    )
    hist = await data(await api.get(f"/api/v1/monitors/{m['id']}/history", params={"limit": "5"}))
    assert len(hist) == 1 and hist[0]["status"] in ("up", "down", "degraded")
    assert [x["region"] for x in hist[0]["results"]] == ["eu-west", "us-east"]
    r = await api.get(f"/api/v1/monitors/{m['id']}/history", params={"start_date": "soon"})
    assert r.status == 422 and "start_date" in (await r.json())["error"]["details"]


async def test_alert_settings_round_trip(api: aiohttp.ClientSession) -> None:
    m = await create(api)
    s = await data(await api.get(f"/api/v1/monitors/{m['id']}/alerts"))
    assert s["email_enabled"] is False and s["alert_threshold"] == 1
    body = {
        "email_enabled": True,
        "email_recipients": ["ops@example.com"],
        "slack_enabled": False,
        "alert_on_recovery": True,
        "alert_threshold": 2,
    }
    s = await data(await api.put(f"/api/v1/monitors/{m['id']}/alerts", json=body))
    assert {k: s[k] for k in body} == body
    assert (await data(await api.get(f"/api/v1/monitors/{m['id']}/alerts")))["alert_threshold"] == 2
    for bad, field in (
        ({"alert_threshold": 0}, "alert_threshold"),
        ({"email_recipients": ["nope"]}, "email_recipients[0]"),
        ({"email_enabled": True}, "email_recipients"),
    ):
        r = await api.put(f"/api/v1/monitors/{m['id']}/alerts", json=bad)
        assert r.status == 422 and field in (await r.json())["error"]["details"], bad


# ---- run now, with real probes ----------------------------------------------------------


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """200 for us-east's probe (127.0.0.11), 503 for everyone else."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.remote == "127.0.0.11" else 503)

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


@pytest.fixture
async def probes(nats_url: str) -> AsyncIterator[list[Agent]]:
    agents = [
        Agent(
            ProbeConfig(
                region=r,
                nats_url=nats_url,
                probe_id=f"probe-{r}",
                source_address=a,
                heartbeat_interval=0.1,
                drain_timeout=2.0,
            )
        )
        for r, a in (("us-east", "127.0.0.11"), ("eu-west", "127.0.0.12"))
    ]
    for a in agents:
        await a.start()
    yield agents
    for a in agents:
        await a.stop()


async def test_check_runs_now_in_every_region(
    controller: Running, api: aiohttp.ClientSession, target: str, probes: list[Agent]
) -> None:
    await eventually(
        lambda: all(controller.app[keys.FLEET].live_regions().get(r, 0) >= 1 for r in ("us-east", "eu-west")),
        timeout=5,
        what="heartbeats of both probes",
    )
    m = await create(
        api,
        url=target,
        locations=["us-east", "eu-west", "ap-south"],
        timeout=2,
        check_interval=3600,
        consensus="any",
    )
    run = await data(await api.post(f"/api/v1/monitors/{m['id']}/check"))
    by = {r["region"]: r for r in run["regions"]}
    assert by["us-east"]["status"] == "ok" and by["us-east"]["status_code"] == 200
    assert by["us-east"]["probe_id"] == "probe-us-east"
    assert by["eu-west"]["status"] == "fail" and by["eu-west"]["status_code"] == 503
    assert by["ap-south"]["status"] == "unavailable"
    assert run["status"] == "down" and run["is_ok"] is False
    test = await data(await api.post(f"/api/v1/monitors/{m['id']}/test"))
    assert {r["region"] for r in test["regions"] if r["status_code"]} == {"us-east", "eu-west"}
    # The monitor's state is untouched; the results are in its log.
    assert (await data(await api.get(f"/api/v1/monitors/{m['id']}")))["status"] == "pending"

    async def four_logged() -> list[dict[str, Any]] | None:
        logs: list[dict[str, Any]] = await data(await api.get(f"/api/v1/monitors/{m['id']}/logs"))
        return logs if len(logs) >= 4 else None

    logs = await eventually(four_logged, timeout=5, what="the four results in the monitor's log")
    assert all(x["on_demand"] for x in logs)


async def test_lists_and_gets_match_the_dict_form_and_show_every_edit_at_once(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    """Lists and gets embed each monitor's config from monitors.SHOWN (built once, JSON
    and all): they equal public()'s dict form, and an edit (through this controller or
    straight in the database, as another controller's would be) shows at the next read."""
    import json

    import msgspec

    from probefleet.controller.api.common import json_default
    from probefleet.controller.api.monitors import public
    from probefleet.controller.storage import monitors as monitor_store

    secret = {"url": "https://u:pw-s3cret@127.0.0.1/x?token=t-s3cret", "headers": {"X-Api-Key": "h-s3cret"}}
    ids = [(await create(api, name=f"m{i}", **secret))["id"] for i in range(2)]
    r = await api.post(
        "/api/v1/monitors", json={"name": "t", "type": "tcp", "host": "127.0.0.1", "port": 5432}
    )
    ids.append((await r.json())["data"]["id"])
    pool = controller.app[keys.POOL]
    for _ in range(2):  # the second read is served from the entries the first one made
        rows = await monitor_store.list_filtered(pool, monitor_store.Filters(), limit=100)
        want = json.loads(msgspec.json.encode([public(r) for r in rows], enc_hook=json_default))
        for query in ("limit=100", "limit=100&page=1", "limit=100&offset=0"):
            r = await api.get(f"/api/v1/monitors?{query}")
            assert "s3cret" not in await r.text()
            assert await data(r) == want
        assert [await data(await api.get(f"/api/v1/monitors/{i}")) for i in ids] == want
    r = await api.patch(
        f"/api/v1/monitors/{ids[0]}", json={"headers": {"X-Api-Key": "<redacted>", "X-Trace": "changed"}}
    )
    assert r.status == 200, await r.text()
    host = "jsonb_set(spec, '{host}', '\"127.0.0.2\"')"
    await pool.execute(f"UPDATE monitors SET name = 'direct', spec = {host} WHERE id = $1", ids[2])
    listed = {m["id"]: m for m in await data(await api.get("/api/v1/monitors?limit=100"))}
    assert listed[ids[0]]["headers"] == {"X-Api-Key": "<redacted>", "X-Trace": "changed"}
    assert listed[ids[2]]["name"] == "direct" and listed[ids[2]]["host"] == "127.0.0.2"
    assert await data(await api.get(f"/api/v1/monitors/{ids[2]}")) == listed[ids[2]]
    # Lists leave the configured columns out for monitors whose config_version the
    # controller saw (migration 0027): a state update keeps the version, an edit of any
    # configured column (here straight in the database) takes a new one.
    version = "SELECT config_version FROM monitors WHERE id = $1"
    before = await pool.fetchval(version, ids[1])
    await pool.execute("UPDATE monitors SET last_check = now(), fail_streak = 1 WHERE id = $1", ids[1])
    assert await pool.fetchval(version, ids[1]) == before
    await pool.execute("UPDATE monitors SET tags = '{edited}' WHERE id = $1", ids[1])
    assert await pool.fetchval(version, ids[1]) != before
    for query in ("limit=100", "limit=100&page=1", "limit=100&offset=0", "limit=100&sort=name"):
        listed = {m["id"]: m for m in await data(await api.get(f"/api/v1/monitors?{query}"))}
        assert listed[ids[1]]["tags"] == ["edited"], query
