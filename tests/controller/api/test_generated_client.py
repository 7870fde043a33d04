"""A client generated from the served document by openapi-python-client (the dev extra)
drives a real controller: a monitor of every kind created, listed page by page, updated,
paused and deleted; incidents, statistics and a status page read. What a client author
gets from the document works as it is, with no hand patching."""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from probefleet.controller.monitors import config as monitors
from tests.controller.conftest import Running

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "pf_generated"
# The badges are SVG, a status page's logo any image and its feed Atom: read as bytes, as
# the generator reads application/octet-stream.
CONFIG = (
    "content_type_overrides:\n  image/svg+xml: application/octet-stream\n"
    "  image/*: application/octet-stream\n  application/atom+xml: application/octet-stream\n"
)

# One body per kind, with only what the kind needs: the generated models fill in the
# schema's defaults, which the server must accept.
TARGETS: dict[str, dict[str, Any]] = {
    "http": {"url": "https://example.com/health"},
    "tcp": {"host": "example.com", "port": 443},
    "udp": {"host": "example.com", "port": 53},
    "icmp": {"host": "example.com"},
    "dns": {"domain": "example.com"},
    "tls": {"host": "example.com"},
    "websocket": {"url": "wss://example.com/live"},
    "grpc": {"host": "example.com", "port": 50051},
    "ssh": {"host": "example.com"},
    "postgres": {"host": "db.example.com"},
    "mysql": {"host": "db.example.com"},
    "redis": {"host": "cache.example.com"},
    "smtp": {"host": "mx.example.com"},
    "imap": {"host": "imap.example.com"},
    "pop3": {"host": "pop.example.com"},
    "mqtt": {"host": "broker.example.com"},
    "heartbeat": {"run_interval": 300},
}
# Kinds whose settings nest: the nested models by name, built once the client exists.
NESTED: dict[str, dict[str, Any]] = {
    "api_flow": {"steps": [("FlowStep", {"url": "https://example.com/health"})]},
    "browser": {
        "steps": [("BrowserStep", {"action": ("BrowserStepAction", "goto"), "url": "https://example.com/"})]
    },
}


def pascal(kind: str) -> str:
    """The generated client's name for a kind: api_flow -> ApiFlow."""
    return "".join(part.capitalize() for part in kind.split("_"))


def target(kind: str) -> dict[str, Any]:
    if kind in TARGETS:
        return TARGETS[kind]

    def value(v: Any) -> Any:  # (enum model, raw value) for the generated enums
        return model(v[0])(v[1]) if isinstance(v, tuple) else v

    return {
        field: [model(name)(**{k: value(v) for k, v in values.items()}) for name, values in items]
        for field, items in NESTED[kind].items()
    }


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """Where the client is generated, importable for the test only."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


async def generate(controller: Running, folder: Path) -> ModuleType:
    async with aiohttp.ClientSession() as anon:
        doc = await (await anon.get(f"{controller.base}/api/v1/openapi.json")).read()
    (folder / "openapi.json").write_bytes(doc)
    (folder / "config.yaml").write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        str(GENERATOR),
        "generate",
        "--path",
        str(folder / "openapi.json"),
        "--meta",
        "none",
        "--config",
        str(folder / "config.yaml"),
        "--output-path",
        str(folder / PACKAGE),
        # Its formatting hook runs ruff from PATH: the venv's.
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    # The generator warns about each part of the document it could not read.
    assert "WARNING" not in text and "Unable to" not in text, text
    return importlib.import_module(PACKAGE)


def model(name: str) -> Any:
    module = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    # The generator also sets digits apart: Pop3MonitorInput is pop_3_monitor_input.
    module = re.sub(r"(?<=[a-z])(\d+)", r"_\1", module)
    return getattr(importlib.import_module(f"{PACKAGE}.models.{module}"), name)


def op(group: str, name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{group}.{name}")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert type(response.parsed).__name__ != "Error", response.parsed
    return response.parsed


@pytest.mark.skipif(not GENERATOR.exists(), reason="openapi-python-client not installed (dev extra)")
@pytest.mark.timeout(120)
async def test_a_generated_client_manages_every_kind_of_monitor(controller: Running, folder: Path) -> None:
    package = await generate(controller, folder)
    client = package.AuthenticatedClient(base_url=controller.base, token=controller.admin_key)
    async with client as c:
        created = {}
        for kind in monitors.KINDS:
            cls = model(f"{pascal(kind)}MonitorInput")
            kind_enum = model(f"{pascal(kind)}MonitorInputType")
            body = cls(type_=kind_enum(kind), name=f"gen-{kind}", **target(kind))
            r = await op("monitors", "monitors_create").asyncio_detailed(client=c, body=body)
            data = ok(r, 201).data
            assert data.type_ == kind and data.name == f"gen-{kind}"
            created[kind] = data.id

        # Every monitor, two at a time, by following meta.next_cursor.
        seen: list[int] = []
        cursor: Any = package.types.UNSET
        while True:
            page = ok(
                await op("monitors", "monitors_list").asyncio_detailed(client=c, limit=2, cursor=cursor)
            )
            seen += [m.id for m in page.data]
            if not page.meta.next_cursor:
                break
            cursor = page.meta.next_cursor
        assert sorted(seen) == sorted(created.values())

        update = model("MonitorUpdate")
        for kind, mid in created.items():
            r = await op("monitors", "monitors_update").asyncio_detailed(
                mid, client=c, body=update(name=f"renamed-{kind}", check_interval=120)
            )
            changed = ok(r).data
            assert changed.name == f"renamed-{kind}" and changed.check_interval in (120, 300)
            pause = model("PauseRequest")(reason="generated client")
            paused = ok(
                await op("monitors", "monitors_pause").asyncio_detailed(mid, client=c, body=pause)
            ).data
            assert paused.is_enabled is False and paused.paused_reason == "generated client"
            got = ok(await op("monitors", "monitors_get").asyncio_detailed(mid, client=c)).data
            assert got.paused_at is not None

        http_id = created["http"]
        stats = ok(await op("monitors", "monitors_stats").asyncio_detailed(http_id, client=c)).data
        assert stats.monitor_id == http_id and stats.checks.total == 0
        status = ok(await op("monitors", "monitors_status").asyncio_detailed(http_id, client=c)).data
        assert status.monitor_id == http_id and status.metrics.rounds_24h == 0

        trigger = model("TriggerBody")(monitor_id=http_id, title="generated", severity="high")
        incident = ok(
            await op("incidents", "incidents_create").asyncio_detailed(client=c, body=trigger), 201
        ).data
        listed = ok(await op("incidents", "incidents_list").asyncio_detailed(client=c)).data
        assert incident.id in [i.id for i in listed]
        ack = model("PatchBody")(status="acknowledged", assignee="ops")
        acked = ok(
            await op("incidents", "incidents_update").asyncio_detailed(incident.id, client=c, body=ack)
        ).data
        assert acked.status == "acknowledged" and acked.assignee == "ops"

        section = model("StatusPageSection")(
            name="Web", monitors=[model("StatusPageMonitor")(monitor_id=http_id, display_name="Site")]
        )
        page_body = model("StatusPageInput")(name="Generated", slug="generated", sections=[section])
        r = await op("status_pages", "status_pages_create").asyncio_detailed(client=c, body=page_body)
        page = ok(r, 201).data
        public = ok(
            await op("status_pages", "status_pages_public").asyncio_detailed(page.slug, client=c)
        ).data
        assert public.name == "Generated" and public.sections[0]["components"][0]["name"] == "Site"

        for mid in created.values():
            r = await op("monitors", "monitors_delete").asyncio_detailed(mid, client=c)
            assert r.status_code == 204
        r = await op("monitors", "monitors_get").asyncio_detailed(created["tcp"], client=c)
        assert r.status_code == 404 and r.parsed.error.code == "not_found"
