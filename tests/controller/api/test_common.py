"""controller/api/common.py, through a small aiohttp app on a loopback port that uses each
helper as the resource modules do: the success envelope, JSON bodies and their limits,
path ids, by_id, where the API key is read from, and `require` against real keys in a
real database (the controller fixture's)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller import keys
from probefleet.controller.api import auth, ratelimit
from probefleet.controller.api.common import (
    MAX_BODY,
    MAX_JSON_DEPTH,
    bearer,
    by_id,
    now_utc,
    ok,
    path_id,
    read_json,
    require,
)
from probefleet.controller.api.errors import error_middleware
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import monitors as monitor_store
from tests.controller.conftest import Running

AT = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


async def envelope(request: web.Request) -> web.Response:
    return ok(
        {"at": AT, "local": AT.astimezone(dt.timezone(dt.timedelta(hours=2)))}, meta={"count": 1}, status=201
    )


async def echo(request: web.Request) -> web.Response:
    return ok(await read_json(request))


async def widget(request: web.Request) -> web.Response:
    return ok(path_id(request, what="widget"))


async def key_of(request: web.Request) -> web.Response:
    return ok(bearer(request))


async def revoke_key(request: web.Request) -> web.Response:
    return ok(await by_id(request, "API key", api_keys.revoke))


async def delete_monitor(request: web.Request) -> web.Response:
    return ok(await by_id(request, "monitor", monitor_store.delete))


async def scoped(request: web.Request) -> web.Response:
    row = await require(request, request.match_info["scope"])
    return ok({"name": row["name"], "stored": request[keys.API_KEY]["id"] == row["id"]})


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    for method, path, handler in (
        ("GET", "/envelope", envelope),
        ("POST", "/echo", echo),
        ("GET", "/widgets/{id}", widget),
        ("GET", "/key", key_of),
        ("DELETE", "/api-keys/{id}", revoke_key),
        ("DELETE", "/monitors/{id}", delete_monitor),
        ("GET", "/scoped/{scope}", scoped),
    ):
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def base() -> AsyncIterator[str]:
    """The app with no state: enough for everything but by_id and require."""
    runner, url = await serve(web.Application(middlewares=[error_middleware], client_max_size=2 << 20))
    yield url
    await runner.cleanup()


@pytest.fixture
async def stateful(controller: Running) -> AsyncIterator[str]:
    """The app with the controller's configuration, pool and NATS connection, and key
    cache and rate limiter of its own, as build_app gives them."""
    app = web.Application(middlewares=[ratelimit.ratelimit_middleware, error_middleware])
    for key in (keys.CONFIG, keys.POOL, keys.NC):
        app[key] = controller.app[key]  # type: ignore[index]
    ratelimit.setup(app)
    auth.setup(app)
    runner, url = await serve(app)
    yield url
    await runner.cleanup()


async def call(
    base: str, method: str, path: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[aiohttp.ClientResponse, Any]:
    async with aiohttp.ClientSession(base_url=base) as s:
        r = await s.request(method, path, headers=headers, data=data)
        return r, await r.json()


# ---- ok, json_response, now_utc -------------------------------------------------------


async def test_it_wraps_data_in_the_envelope_with_a_timestamp_and_meta(base: str) -> None:
    before = now_utc()
    r, body = await call(base, "GET", "/envelope")
    assert r.status == 201 and r.content_type == "application/json"
    assert body["data"] == {"at": "2024-05-01T12:30:00Z", "local": "2024-05-01T14:30:00+02:00"}
    assert body["meta"]["count"] == 1
    stamp = dt.datetime.fromisoformat(body["meta"]["timestamp"])
    assert body["meta"]["timestamp"].endswith("Z") and before <= stamp <= now_utc()


# ---- read_json ------------------------------------------------------------------------


async def test_it_reads_a_json_body(base: str) -> None:
    r, body = await call(base, "POST", "/echo", data=b'{"name": "x", "n": [1, 2]}')
    assert r.status == 200 and body["data"] == {"name": "x", "n": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "empty body"),
        (b"  \n ", "empty body"),
        (b'{"name": ', "Input data was truncated"),
        (b"{'a': 1}", "JSON is malformed: object keys must be strings (byte 1)"),
    ],
    ids=["empty", "blank", "truncated", "single-quotes"],
)
async def test_it_refuses_a_body_that_is_not_json_with_400_saying_why(
    base: str, raw: bytes, detail: str
) -> None:
    r, body = await call(base, "POST", "/echo", data=raw)
    assert r.status == 400
    assert body["error"] == {
        "code": "bad_request",
        "message": "Request body must be valid JSON",
        "details": {"body": detail},
    }


async def test_it_reads_a_body_of_max_body_bytes_and_refuses_one_more_with_413(base: str) -> None:
    largest = b'"' + b"a" * (MAX_BODY - 2) + b'"'
    r, body = await call(base, "POST", "/echo", data=largest)
    assert r.status == 200 and len(body["data"]) == MAX_BODY - 2
    r, body = await call(base, "POST", "/echo", data=largest + b" ")
    assert r.status == 413 and body["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b'{"name": "a\\u0000b"}', "name", "must not contain NUL (\\u0000)"),
        (b'{"tags": ["ok", "\\u0000"]}', "tags[1]", "must not contain NUL (\\u0000)"),
        (b'{"a": {"b\\u0000": 1}}', "a.b\\u0000", "field name must not contain NUL (\\u0000)"),
        (b'{"id": 9223372036854775808}', "id", "integer out of range (64-bit signed)"),
        (b'{"id": -9223372036854775809}', "id", "integer out of range (64-bit signed)"),
        (b'"\\u0000"', "body", "must not contain NUL (\\u0000)"),
    ],
    ids=["nul", "nul-in-list", "nul-in-key", "2^63", "-2^63-1", "top-level"],
)
async def test_it_refuses_what_no_column_can_store_with_422_naming_the_field(
    base: str, raw: bytes, field: str, message: str
) -> None:
    r, body = await call(base, "POST", "/echo", data=raw)
    assert r.status == 422 and body["error"]["details"] == {field: message}


async def test_it_reads_64_bit_integers_and_json_up_to_max_depth(base: str) -> None:
    r, body = await call(base, "POST", "/echo", data=b"[9223372036854775807, -9223372036854775808]")
    assert r.status == 200 and body["data"] == [2**63 - 1, -(2**63)]
    deepest = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert (await call(base, "POST", "/echo", data=deepest))[0].status == 200


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
async def test_it_refuses_json_nested_too_deep_with_400(base: str, depth: int) -> None:
    r, body = await call(base, "POST", "/echo", data=b"[" * depth + b"]" * depth)
    assert r.status == 400 and body["error"]["details"] == {"body": "nested too deep"}


# ---- path_id --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "42", "9" * 18, str(2**63 - 1)])
async def test_it_reads_a_numeric_id_from_the_path(base: str, raw: str) -> None:
    r, body = await call(base, "GET", f"/widgets/{raw}")
    assert r.status == 200 and body["data"] == int(raw)


@pytest.mark.parametrize(
    "raw",
    ["abc", "-1", "1.5", "1e3", "9" * 19, str(2**63), "%C2%B9", "%D9%A3", "+1", " 1"],
    ids=["word", "negative", "float", "exp", "long", "2^63", "superscript", "arabic-indic", "plus", "space"],
)
async def test_it_answers_404_naming_the_resource_for_an_id_that_is_no_number(base: str, raw: str) -> None:
    r, body = await call(base, "GET", f"/widgets/{raw}")
    assert r.status == 404 and body["error"]["message"] == "widget not found"


# ---- bearer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"Authorization": "Bearer pf_abc"}, "pf_abc"),
        ({"Authorization": "bearer   pf_abc  "}, "pf_abc"),
        ({"X-API-Key": "pf_abc"}, "pf_abc"),
        ({"Authorization": "Bearer pf_first", "X-API-Key": "pf_second"}, "pf_first"),
        ({"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": "pf_abc"}, "pf_abc"),
        ({"Cookie": "session_cookie=pf_abc"}, "pf_abc"),
        ({"Cookie": "session=pf_abc"}, "pf_abc"),
        ({"Cookie": "session=pf_abc", "Sec-Fetch-Site": "same-origin"}, "pf_abc"),
        ({"Cookie": "session=pf_abc", "Sec-Fetch-Site": "none"}, "pf_abc"),
        ({"Cookie": "session=pf_abc", "Origin": "https://evil.example"}, None),
        ({"Cookie": "session=pf_abc", "Sec-Fetch-Site": "cross-site"}, None),
        ({"Cookie": "session=pf_abc", "Sec-Fetch-Site": "same-site"}, None),
        ({"Cookie": "other=pf_abc"}, None),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({}, None),
    ],
    ids=[
        "bearer",
        "bearer-any-case-padded",
        "x-api-key",
        "bearer-first",
        "basic-is-no-key",
        "cookie",
        "cookie-short-name",
        "cookie-same-origin",
        "cookie-typed-url",
        "cookie-from-a-page",
        "cookie-cross-site",
        "cookie-same-site",
        "other-cookie",
        "basic-only",
        "nothing",
    ],
)
async def test_it_reads_the_key_from_bearer_x_api_key_or_a_cookie_only_the_browser_sent_itself(
    base: str, headers: dict[str, str], key: str | None
) -> None:
    r, body = await call(base, "GET", "/key", headers=headers)
    assert r.status == 200 and body["data"] == key


# ---- by_id ----------------------------------------------------------------------------


async def test_it_returns_what_the_action_gives_for_the_path_id_else_404(
    stateful: str, controller: Running
) -> None:
    key, row = await api_keys.create(controller.app[keys.POOL], "doomed", ["monitors:read"])
    r, body = await call(stateful, "DELETE", f"/api-keys/{row['id']}")
    assert r.status == 200 and body["data"] == key[:12]  # revoke gives the prefix
    r, body = await call(stateful, "DELETE", f"/api-keys/{row['id']}")  # None: already revoked
    assert r.status == 404 and body["error"]["message"] == "API key not found"
    r, body = await call(stateful, "DELETE", "/monitors/12345")  # False: no such monitor
    assert r.status == 404 and body["error"]["message"] == "monitor not found"
    r, body = await call(stateful, "DELETE", "/monitors/twelve")
    assert r.status == 404 and body["error"]["message"] == "monitor not found"


# ---- require --------------------------------------------------------------------------


async def test_it_asks_for_a_key_when_none_was_sent(stateful: str) -> None:
    r, body = await call(stateful, "GET", "/scoped/monitors:read")
    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert body["error"]["code"] == "unauthorized" and "missing API key" in body["error"]["message"]


@pytest.mark.parametrize("problem", ["unknown", "malformed", "revoked", "expired"])
async def test_it_refuses_a_key_that_is_unknown_revoked_or_expired(
    stateful: str, controller: Running, problem: str
) -> None:
    pool = controller.app[keys.POOL]
    expires = now_utc() - dt.timedelta(seconds=1) if problem == "expired" else None
    key, row = await api_keys.create(pool, problem, ["admin"], expires_at=expires)
    if problem == "revoked":
        await api_keys.revoke(pool, row["id"])
    sent = {"unknown": key[:-4] + "AAAA", "malformed": "not-a-key"}.get(problem, key)
    r, body = await call(stateful, "GET", "/scoped/monitors:read", headers={"X-API-Key": sent})
    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert body["error"]["message"] == "invalid, revoked or expired API key"


async def test_it_refuses_a_key_without_the_scope_with_403_naming_it(
    stateful: str, controller: Running
) -> None:
    key, _ = await api_keys.create(controller.app[keys.POOL], "reader", ["monitors:read"])
    r, body = await call(
        stateful, "GET", "/scoped/monitors:write", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status == 403
    assert body["error"]["code"] == "forbidden" and body["error"]["details"] == {
        "required_scope": "monitors:write"
    }


async def test_it_returns_a_key_holding_the_scope_and_keeps_it_on_the_request(
    stateful: str, controller: Running
) -> None:
    key, _ = await api_keys.create(controller.app[keys.POOL], "reader", ["monitors:read"])
    r, body = await call(stateful, "GET", "/scoped/monitors:read", headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200 and body["data"] == {"name": "reader", "stored": True}
    assert r.headers["X-RateLimit-Limit"]  # the request was counted against the key


@pytest.mark.parametrize("scope", ["monitors:write", "api_keys:write", "anything:at-all"])
async def test_it_lets_an_admin_key_through_every_scope(
    stateful: str, controller: Running, scope: str
) -> None:
    r, body = await call(stateful, "GET", f"/scoped/{scope}", headers={"X-API-Key": controller.admin_key})
    assert r.status == 200 and body["data"]["name"] == "test-admin"
