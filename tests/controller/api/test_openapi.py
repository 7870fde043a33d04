"""The served OpenAPI 3.1 document (golden file) and the HTML docs page.

The golden file holds the operations described in full (controller/openapi.py
OPERATIONS) and every component schema; other routes only have to be present, so an
endpoint added elsewhere does not churn this file. Regenerate with
PROBEFLEET_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp

from probefleet.controller.api import openapi, routes
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
    assert {"url", "host", "port", "record_type"} <= set(comps["MonitorInput"]["properties"])


async def test_the_docs_page_is_self_contained_html(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.get("/api/docs")
        text = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert "/api/v1/monitors/{id}/pause" in text and 'id="schema-Monitor"' in text
    assert "<script" not in text and "http://" not in text.replace("http://127.0.0.1", "")
    assert "https://" not in text


async def test_generic_entries_name_anonymous_routes_media_types_and_204(controller: Running) -> None:
    paths = openapi.document(controller.app)["paths"]
    for path in (
        "/status/{slug}",
        "/api/v1/heartbeat/{token}",
        "/api/v1/status-pages/{slug}/public",
        "/metrics",
    ):
        assert paths[path]["get"]["security"] == [], path
    assert "security" not in paths["/api/v1/heartbeats/{id}"]["get"]
    assert "text/html" in paths["/status/{slug}"]["get"]["responses"]["default"]["content"]
    assert (
        "image/svg+xml" in paths["/api/v1/monitors/{id}/badge.svg"]["get"]["responses"]["default"]["content"]
    )
    assert "204" in paths["/api/v1/heartbeats/{id}"]["delete"]["responses"]
