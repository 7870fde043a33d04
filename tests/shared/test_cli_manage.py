"""`probefleet monitors | incidents | keys | status-pages` against a real controller, and how
the commands find it (flags, environment, profiles)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import click
import pytest
import yaml
from click.testing import CliRunner, Result

from probefleet.shared import cli_manage
from probefleet.shared.cli_connect import resolve
from tests.controller.conftest import Running, start_controller


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


async def cli(
    controller: Running, group: click.Group, *args: str, env: dict[str, str] | None = None
) -> Result:
    """The command with the controller's URL and admin key in the environment (in a thread:
    the controller answers from this test's event loop)."""
    environ = {"PROBEFLEET_URL": controller.base, "PROBEFLEET_API_KEY": controller.admin_key, **(env or {})}
    return await asyncio.to_thread(CliRunner().invoke, group, list(args), env=environ)


async def test_it_manages_monitors(controller: Running) -> None:
    made = await cli(
        controller,
        cli_manage.monitors,
        "create",
        "--name",
        "db",
        "--type",
        "tcp",
        "--url",
        "127.0.0.1:5432",
        "--location",
        "us-east",
        "--set",
        "retry_count=2",
        "-o",
        "json",
    )
    assert made.exit_code == 0, made.output
    monitor = json.loads(made.output)
    assert monitor["host"] == "127.0.0.1" and monitor["port"] == 5432 and monitor["retry_count"] == 2
    mid = str(monitor["id"])

    listed = await cli(controller, cli_manage.monitors, "list")
    assert listed.exit_code == 0
    header, row = listed.output.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "STATUS", "CHECK_INTERVAL", "LOCATIONS", "UPTIME_24H"]
    assert row.split()[:4] == [mid, "db", "tcp", "pending"]
    none = await cli(controller, cli_manage.monitors, "list", "--type", "http", "-o", "json")
    assert json.loads(none.output) == []

    paused = await cli(controller, cli_manage.monitors, "pause", mid, "--reason", "migration", "-o", "yaml")
    assert paused.exit_code == 0 and yaml.safe_load(paused.output)["status"] == "paused"
    resumed = await cli(controller, cli_manage.monitors, "resume", mid, "-o", "json")
    assert json.loads(resumed.output)["status"] != "paused"
    got = await cli(controller, cli_manage.monitors, "get", mid)
    assert yaml.safe_load(got.output)["name"] == "db"

    deleted = await cli(controller, cli_manage.monitors, "delete", mid, "--yes")
    assert deleted.exit_code == 0 and deleted.output == f"deleted monitor {mid}\n"
    missing = await cli(controller, cli_manage.monitors, "get", mid)
    assert missing.exit_code == 1 and "monitor not found" in missing.output


async def test_bad_input_exits_2_and_an_unreachable_server_3(controller: Running) -> None:
    bad = await cli(controller, cli_manage.monitors, "create", "--name", "x", "--url", "ftp://x")
    assert bad.exit_code == 2 and "url:" in bad.output, bad.output
    gone = await cli(controller, cli_manage.monitors, "list", env={"PROBEFLEET_URL": "http://127.0.0.1:9"})
    assert gone.exit_code == 3 and "cannot reach" in gone.output


async def test_it_manages_incidents(controller: Running) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession() as s:
        body = {"title": "database slow", "severity": "major"}
        async with s.post(controller.base + "/api/v1/incidents", json=body, headers=headers) as r:
            assert r.status == 201, await r.text()
            iid = str((await r.json())["data"]["id"])
    listed = await cli(controller, cli_manage.incidents, "list", "-o", "json")
    assert [str(i["id"]) for i in json.loads(listed.output)] == [iid]
    acked = await cli(controller, cli_manage.incidents, "ack", iid, "--assignee", "ana", "-o", "json")
    assert acked.exit_code == 0 and json.loads(acked.output)["status"] == "acknowledged"
    resolved = await cli(controller, cli_manage.incidents, "resolve", iid, "-o", "json")
    assert json.loads(resolved.output)["status"] == "resolved"
    active = await cli(controller, cli_manage.incidents, "list")
    assert active.output.splitlines() == ["ID  MONITOR_ID  STATUS  SEVERITY  STARTED_AT  RESOLVED_AT"]


async def test_it_manages_keys_without_printing_them_again(controller: Running) -> None:
    made = await cli(controller, cli_manage.keys, "create", "--name", "ci", "--scope", "monitors:read")
    assert made.exit_code == 0, made.output
    key = made.output.split(": ", 1)[1].split()[0]
    assert key.startswith("pf_")
    listed = await cli(controller, cli_manage.keys, "list", "-o", "json")
    ci = next(k for k in json.loads(listed.output) if k["name"] == "ci")
    assert key not in listed.output and "key" not in ci
    as_ci = await cli(controller, cli_manage.monitors, "list", env={"PROBEFLEET_API_KEY": key})
    assert as_ci.exit_code == 0
    revoked = await cli(controller, cli_manage.keys, "revoke", str(ci["id"]))
    assert revoked.exit_code == 0, revoked.output
    refused = await cli(controller, cli_manage.monitors, "list", env={"PROBEFLEET_API_KEY": key})
    assert refused.exit_code == 1 and "invalid, revoked or expired" in refused.output


async def test_it_lists_status_pages(controller: Running) -> None:
    empty = await cli(controller, cli_manage.status_pages, "list")
    assert empty.exit_code == 0 and empty.output.split() == ["ID", "SLUG", "TITLE"]


def test_a_profile_supplies_what_flags_and_environment_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "probefleet"
    folder.mkdir()
    (tmp_path / "key").write_text("pf_fromfile\n")
    (folder / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "default": "prod",
                "profiles": {
                    "prod": {"url": "https://prod.example", "api_key_file": str(tmp_path / "key")},
                    "local": {"url": "http://127.0.0.1:8080", "api_key": "pf_local"},
                },
            }
        )
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("PROBEFLEET_URL", raising=False)
    monkeypatch.delenv("PROBEFLEET_API_KEY", raising=False)
    prod = resolve(None, None, None)
    assert (prod.url, prod.api_key, prod.profile) == ("https://prod.example", "pf_fromfile", "prod")
    local = resolve(None, None, "local")
    assert (local.url, local.api_key) == ("http://127.0.0.1:8080", "pf_local")
    monkeypatch.setenv("PROBEFLEET_API_KEY", "pf_env")
    flagged = resolve("https://other.example", None, "local")
    assert (flagged.url, flagged.api_key) == ("https://other.example", "pf_env")
    assert "pf_" not in repr(flagged) and "pf_" not in repr(flagged.client().settings)
    with pytest.raises(click.UsageError, match="no profile 'staging'"):
        resolve(None, None, "staging")
