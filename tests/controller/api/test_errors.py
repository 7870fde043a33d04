"""controller/api/errors.py: every error leaves as one JSON envelope
{"error": {"code", "message", "details"}}, exercised through a small aiohttp app with the
middleware on a loopback port."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from probefleet.controller.api.errors import ApiError, error_middleware, not_found
from probefleet.controller.validation import ValidationError

SECRET = "password=hunter2 at db.internal:5432"


async def raise_api_error(request: web.Request) -> web.Response:
    raise ApiError(409, "conflict", "already running", {"run_id": 3}, headers={"Retry-After": "5"})


async def raise_not_found(request: web.Request) -> web.Response:
    raise not_found("widget")


async def raise_validation(request: web.Request) -> web.Response:
    raise ValidationError({"interval": "must be at least 10", "locations[1]": "unknown region"})


async def raise_bug(request: web.Request) -> web.Response:
    raise RuntimeError(SECRET)


async def raise_http(request: web.Request) -> web.Response:
    raise web.HTTPUnsupportedMediaType(reason="send JSON")


class TeapotError(web.HTTPClientError):
    """A status the envelope has no code name for."""

    status_code = 418


async def raise_teapot(request: web.Request) -> web.Response:
    raise TeapotError()


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"data": "ok"})


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api-error", raise_api_error)
    app.router.add_get("/not-found", raise_not_found)
    app.router.add_get("/validation", raise_validation)
    app.router.add_get("/bug", raise_bug)
    app.router.add_post("/http", raise_http)
    app.router.add_get("/teapot", raise_teapot)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/fine", fine)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def call(base: str, method: str, path: str) -> tuple[aiohttp.ClientResponse, Any]:
    async with aiohttp.ClientSession(base_url=base) as s:
        r = await s.request(method, path, allow_redirects=False)
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r, body


async def test_it_renders_an_api_error_with_its_status_code_details_and_headers(base: str) -> None:
    r, body = await call(base, "GET", "/api-error")
    assert r.status == 409 and r.headers["Retry-After"] == "5"
    assert body == {"error": {"code": "conflict", "message": "already running", "details": {"run_id": 3}}}


async def test_it_says_which_resource_was_not_found(base: str) -> None:
    r, body = await call(base, "GET", "/not-found")
    assert r.status == 404
    assert body == {"error": {"code": "not_found", "message": "widget not found", "details": {}}}


async def test_it_maps_a_domain_validation_error_to_422_with_one_message_per_field(base: str) -> None:
    r, body = await call(base, "GET", "/validation")
    assert r.status == 422
    assert body["error"] == {
        "code": "validation_error",
        "message": "Validation failed",
        "details": {"interval": "must be at least 10", "locations[1]": "unknown region"},
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "message"),
    [
        ("GET", "/nowhere", 404, "not_found", "no such endpoint"),
        ("POST", "/http", 415, "unsupported_media_type", "send JSON"),
        ("GET", "/teapot", 418, "error", "I'm a Teapot"),
    ],
    ids=["unknown-path", "named-code", "unnamed-code"],
)
async def test_it_renders_http_exceptions_in_the_envelope(
    base: str, method: str, path: str, status: int, code: str, message: str
) -> None:
    r, body = await call(base, method, path)
    assert r.status == status and r.content_type == "application/json"
    assert body == {"error": {"code": code, "message": message, "details": {}}}


async def test_it_keeps_only_the_allow_header_of_a_405(base: str) -> None:
    r, body = await call(base, "DELETE", "/fine")
    assert r.status == 405 and body["error"]["code"] == "method_not_allowed"
    assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_it_lets_redirects_through(base: str) -> None:
    r, _ = await call(base, "GET", "/redirect")
    assert r.status == 302 and r.headers["Location"] == "/elsewhere"


async def test_it_turns_a_bug_into_a_500_envelope_without_internals(
    base: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="probefleet.api"):
        r, body = await call(base, "GET", "/bug")
    assert r.status == 500
    assert body == {"error": {"code": "internal_error", "message": "internal error", "details": {}}}
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)
    # The operator still gets the traceback, with the path.
    [record] = [r for r in caplog.records if r.name == "probefleet.api"]
    assert "path=/bug" in record.getMessage() and record.exc_info is not None


async def test_it_passes_successful_answers_unchanged(base: str) -> None:
    r, body = await call(base, "GET", "/fine")
    assert r.status == 200 and body == {"data": "ok"}


@pytest.mark.parametrize(
    ("path", "status", "details"),
    [
        ("/fine?q=a%00b", 422, {"q": "must not contain NUL (\\u0000)"}),
        ("/fine?a%00=1", 422, {"a\\u0000": "must not contain NUL (\\u0000)"}),
        ("/fine%00", 404, {}),
    ],
    ids=["query-value", "query-name", "path"],
)
async def test_it_refuses_nul_in_the_url_before_any_handler(
    base: str, path: str, status: int, details: dict[str, str]
) -> None:
    r, body = await call(base, "GET", path)
    assert r.status == status and body["error"]["details"] == details
