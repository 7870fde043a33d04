"""The served OpenAPI 3.1 document (golden file) and the HTML docs page.

The golden file holds every operation (controller/api/openapi.py OPERATIONS) and every
component schema. Regenerate with PROBEFLEET_REGEN_GOLDEN=1 and review the diff. The
document must pass openapi-spec-validator, and no operation may be untyped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from probefleet.controller.api import openapi, routes
from probefleet.controller.api.errors import ApiError, error_middleware
from probefleet.controller.monitors import config as monitors
from tests.controller.conftest import Running

GOLDEN = Path(__file__).parents[3] / "tests" / "testdata" / "openapi.json"


def described(doc: dict[str, object]) -> dict[str, object]:
    mine = {op[1] for op in openapi.OPERATIONS}
    paths = doc["paths"]
    assert isinstance(paths, dict)
    out = dict(doc)
    out["paths"] = {
        p: {m: o for m, o in ops.items() if (m, p) in {(x[0], x[1]) for x in openapi.OPERATIONS}}
        for p, ops in paths.items()
        if p in mine
    }
    info = dict(out["info"])  # type: ignore[call-overload]
    info["version"] = "<version>"
    out["info"] = info
    return out


async def test_the_document_matches_the_golden_file(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/v1/openapi.json")
        assert r.status == 200 and r.content_type == "application/json"
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    got = json.dumps(described(doc), indent=2, sort_keys=True) + "\n"
    if os.environ.get("PROBEFLEET_REGEN_GOLDEN"):
        GOLDEN.write_text(got)
    want = json.loads(GOLDEN.read_text())
    changed = "OpenAPI document changed: PROBEFLEET_REGEN_GOLDEN=1 and review"
    assert cosmetic(json.loads(got)) == cosmetic(want), changed


def cosmetic(node: object) -> object:
    """The document with runs of whitespace in text collapsed: a library that re-wraps or
    dedents a docstring changes no contract."""
    if isinstance(node, dict):
        return {k: cosmetic(v) for k, v in node.items()}
    if isinstance(node, list):
        return [cosmetic(v) for v in node]
    return " ".join(node.split()) if isinstance(node, str) else node


def test_the_golden_comparison_ignores_only_whitespace() -> None:
    assert cosmetic({"d": "a\n    b"}) == cosmetic({"d": "a b"})
    assert cosmetic({"d": "a b"}) != cosmetic({"d": "a c"})


async def test_every_route_is_in_the_document(controller: Running) -> None:
    doc = openapi.document(controller.app)
    for route in controller.app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or path in openapi.SKIP:
            continue
        if path in routes.alias_paths():
            assert path not in doc["paths"], path
            continue
        assert route.method.lower() in doc["paths"].get(path, {}), (route.method, path)
    assert not [p for p in doc["paths"] if p.startswith("/v1/")]


def test_request_schemas_come_from_the_validating_types() -> None:
    comps = openapi.components()
    assert comps["MonitorCommon"]["properties"]["check_interval"]["maximum"] == 86400
    assert comps["ApiKeyCreate"]["required"] == ["name"]
    assert set(comps["BulkAction"]["properties"]["action"]["enum"]) == {"pause", "resume", "delete", "update"}
    assert comps["HttpSpec"]["properties"]["basic_auth"]["anyOf"][0]["items"] == {"type": "string"}
    assert "prefixItems" not in json.dumps(comps)


def test_monitor_input_is_one_schema_per_kind_on_type() -> None:
    comps = openapi.components()
    union = comps["MonitorInput"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in union["oneOf"]] == [
        f"{k.capitalize()}MonitorInput" for k in monitors.KINDS
    ]
    assert union["discriminator"]["propertyName"] == "type"
    assert union["discriminator"]["mapping"]["website"].endswith("/HttpMonitorInput")
    tcp = comps["TcpMonitorInput"]["properties"]
    assert {"host", "port", "name", "check_interval"} <= set(tcp) and not {
        "url",
        "method",
        "record_type",
    } & set(tcp)
    assert comps["TcpMonitorInput"]["required"] == ["type", "name", "host", "port"]
    assert "domain" in comps["DnsMonitorInput"]["properties"]  # the wire's `name`, renamed
    assert "ping_interval" in comps["IcmpMonitorInput"]["properties"]
    update = comps["MonitorUpdate"]["properties"]
    assert {"url", "host", "record_type"} <= set(update)
    assert not [k for k, v in update.items() if "default" in v]


async def test_every_operation_is_typed_and_named_once(controller: Running) -> None:
    doc = openapi.document(controller.app)
    assert openapi.untyped(doc) == []
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and len(ids) > 100
    assert {"monitors_create", "incidents_update", "heartbeat_ping_signal_post"} <= set(ids)
    assert all(re.fullmatch(r"[a-z_]+", i) for i in ids), ids


def test_the_untyped_count_sees_an_empty_schema() -> None:
    doc = {
        "paths": {"/x": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {}}}}}}}}
    }
    assert openapi.untyped(doc) == ["GET /x"]
    doc = {"paths": {"/x": {"get": {"responses": {"200": {"description": "no content"}}}}}}
    assert openapi.untyped(doc) == ["GET /x"]
    doc = {"paths": {"/x": {"delete": {"responses": {"204": {"description": "Deleted"}}}}}}
    assert openapi.untyped(doc) == []


async def test_the_served_document_passes_openapi_spec_validator(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        doc = await (await anon.get("/api/v1/openapi.json")).json()
    validate(doc)
    paths = list(doc["paths"])
    assert paths.index("/api/v1/monitors") < paths.index("/status/{slug}")


async def test_the_docs_page_is_swagger_ui_served_from_the_package(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/docs")
        text = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "connect-src 'self'" in csp
        # Every script and stylesheet comes from this server, relative to /api/docs.
        assert "//" not in text.replace("<!--", "")
        for name, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
            assert f'"docs/{name}"' in text
            asset = await anon.get(f"/api/docs/{name}")
            assert asset.status == 200 and asset.content_type == kind
            assert len(await asset.read()) > 100_000
        init = await (await anon.get("/api/docs/docs.js")).text()
        assert '"v1/openapi.json"' in init and "validatorUrl: null" in init
        assert (await anon.get("/api/docs/LICENSE")).status == 404
        assert (await anon.get("/api/docs/..%2Fopenapi.py")).status == 404


async def test_the_document_speaks_to_users(controller: Running) -> None:
    doc = openapi.document(controller.app)
    text = json.dumps(doc)
    assert "reference 0" not in text.lower() and "issue " not in text.lower()
    assert doc["info"]["description"].startswith("Distributed uptime monitoring")
    analytics = doc["paths"]["/api/v1/analytics/{monitor_id}"]["get"]
    assert analytics["parameters"][0]["schema"]["type"] == "integer"
    assert {t["name"] for t in doc["tags"]} >= {
        op["tags"][0] for ops in doc["paths"].values() for op in ops.values()
    }


async def test_anonymous_routes_media_types_and_204(controller: Running) -> None:
    paths = openapi.document(controller.app)["paths"]
    for path in (
        "/status/{slug}",
        "/api/v1/heartbeat/{token}",
        "/api/v1/status-pages/{slug}/public",
        "/metrics",
    ):
        assert paths[path]["get"]["security"] == [], path
    assert "security" not in paths["/api/v1/heartbeats/{id}"]["get"]
    assert "text/html" in paths["/status/{slug}"]["get"]["responses"]["200"]["content"]
    assert "image/svg+xml" in paths["/api/v1/monitors/{id}/badge.svg"]["get"]["responses"]["200"]["content"]
    assert "204" in paths["/api/v1/heartbeats/{id}"]["delete"]["responses"]


async def test_a_deprecated_operation_says_so_in_its_answers_and_the_document(
    controller: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = dt.date(2026, 1, 15)
    monkeypatch.setitem(openapi.DEPRECATED, ("get", "/api/v1/subscription"), since)
    doc = openapi.document(controller.app)
    assert doc["paths"]["/api/v1/subscription"]["get"]["deprecated"] is True
    assert "deprecated" not in doc["paths"]["/api/v1/subscription"]["post"]

    async def answer(request: web.Request) -> web.Response:
        if request.query.get("fail"):
            raise ApiError(409, "conflict", "no")
        return web.json_response({"data": {}})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/x", openapi.deprecated(answer, since))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as s:
            for query, status in (({}, 200), ({"fail": "1"}, 409)):
                r = await s.get("/x", params=query)
                assert r.status == status
                assert r.headers["Deprecation"] == "@1768435200"  # 2026-01-15T00:00:00Z
                assert 'rel="deprecation"' in r.headers["Link"]
    finally:
        await runner.cleanup()
