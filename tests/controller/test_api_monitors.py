"""/api/v1/monitors: the happy paths and every kind of bad request."""

from __future__ import annotations

import aiohttp
import pytest

from tests.controller.conftest import Running

HTTP_MONITOR = {
    "name": "site",
    "url": "http://127.0.0.1:9/x",
    "check_interval": 30,
    "locations": ["us-east", "eu-west"],
}


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
