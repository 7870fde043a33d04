"""`probefleet import kuma|gatus`: fixtures written from each tool's documented format
(tests/testdata/import/), converted, checked offline, then applied to a real controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from probefleet.shared import cli_config
from probefleet.shared.cli_import import import_config
from tests.controller.conftest import Running, start_controller

FIXTURES = Path(__file__).resolve().parents[1] / "testdata" / "import"


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


async def imported_and_applied(
    controller: Running, tmp_path: Path, source: str, fixture: str, env: dict[str, str]
) -> tuple[str, list[dict[str, object]]]:
    out = tmp_path / "imported.yaml"
    converted = CliRunner().invoke(import_config, [source, str(FIXTURES / fixture), "-o", str(out)])
    assert converted.exit_code == 0, converted.output
    text = out.read_text()
    for secret in ("XXXX", "YYYY", "ABC-DEF", "0123456789abcdef"):
        assert secret not in text
    valid = CliRunner().invoke(cli_config.validate, ["-f", str(out)])
    assert valid.exit_code == 0, valid.output
    environ = {"PROBEFLEET_URL": controller.base, "PROBEFLEET_API_KEY": controller.admin_key, **env}
    applied = await asyncio.to_thread(CliRunner().invoke, cli_config.apply, ["-f", str(out)], env=environ)
    assert applied.exit_code == 0, applied.output
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(controller.base + "/api/v1/monitors?limit=100", headers=headers) as r,
    ):
        monitors = (await r.json())["data"]
    return converted.output, monitors


async def test_it_imports_a_kuma_backup(controller: Running, tmp_path: Path) -> None:
    env = {
        "KUMA_OPS_SLACK_URL": "https://hooks.slack.com/services/T0/B0/z",
        "KUMA_ON_CALL_BOT_TOKEN": "123:abc",
    }
    report, monitors = await imported_and_applied(controller, tmp_path, "kuma", "kuma-backup.json", env)
    by_name = {m["name"]: m for m in monitors}
    assert sorted(by_name) == [
        "API status",
        "Database port",
        "Gateway ping",
        "Login page",
        "Mail MX",
        "Nightly backup",
        "Website",
    ]
    assert by_name["Website"]["expected_status"] == ["2xx", 301] and by_name["Website"]["tags"] == [
        "prod",
        "team:web",
    ]
    assert by_name["Login page"]["expected_content"] == "Sign in"
    assert by_name["Database port"]["type"] == "tcp" and by_name["Database port"]["status"] == "paused"
    assert by_name["Mail MX"]["record_type"] == "MX" and by_name["Nightly backup"]["type"] == "heartbeat"
    assert "KUMA_OPS_SLACK_URL: notification 'Ops Slack', field slackwebhookURL" in report
    for unmapped in (
        "type 'gotify'",
        "'Production': type 'group'",
        "'Redis': type 'redis'",
        "upside-down",
        "200-399 widened",
    ):
        assert unmapped in report, unmapped


async def test_it_imports_a_gatus_config(controller: Running, tmp_path: Path) -> None:
    env = {
        "GATUS_SLACK_URL": "https://hooks.slack.com/services/T0/B0/z",
        "GATUS_PAGERDUTY_ROUTING_KEY": "0" * 32,
    }
    report, monitors = await imported_and_applied(controller, tmp_path, "gatus", "gatus.yaml", env)
    by_name = {m["name"]: m for m in monitors}
    assert sorted(by_name) == [
        "backup-job",
        "certificate",
        "front-end",
        "health",
        "postgres",
        "resolver",
        "router",
    ]
    front = by_name["front-end"]
    assert front["check_interval"] == 300 and front["expected_status"] == [200] and front["retry_count"] == 2
    assert by_name["health"]["json_assertions"] == [
        {"path": "$.status", "value": "UP"}
    ]  # op equals: the default
    assert by_name["certificate"]["warn_days"] == 10 and by_name["postgres"]["port"] == 5432
    assert "len([BODY].items) > 0" in report and "'ssh://example.org:22' is not a kind" in report
    assert "alerting 'gotify'" in report


def test_an_unreadable_source_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "backup.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(import_config, ["kuma", str(bad)])
    assert result.exit_code == 2 and "backup.json" in result.output
