"""`probefleet validate | apply | diff | export` against a real controller (POST /api/v1/apply
and GET /api/v1/export over HTTP on loopback, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result

from probefleet.controller.api.apply import file_schema
from probefleet.shared import cli_config
from tests.controller.conftest import Running, start_controller

ROOT = Path(__file__).resolve().parents[2]

SET = """
defaults:
  check_interval: 30
  locations: [us-east, eu-west]
channels:
  - name: ops hook
    ref: ops
    kind: webhook
    config:
      url: ${env:HOOK_URL}
rules:
  - name: api rule
    channels: [ops]
    monitors: [api]
monitors:
  - name: API
    ref: api
    type: http
    url: http://127.0.0.1:9/health
    notifications: [ops]
    headers: {Authorization: "Bearer ${env:API_TOKEN}"}
  - name: DB
    type: tcp
    host: 127.0.0.1
    port: 5432
    parent: api
  - {name: resolver, type: dns, domain: example.com, record_type: A}
  - {name: cert, type: tls, host: 127.0.0.1, port: 8443}
  - {name: dns udp, type: udp, host: 127.0.0.1, port: 53}
  - {name: ping, type: icmp, host: 127.0.0.1}
heartbeats:
  - name: nightly backup
    run_interval: 86400
    grace_period: 3600
maintenance:
  - name: patch tuesday
    monitors: [api]
    days: [tue]
    start_time: "02:00"
    duration: 3600
"""
ENV = {"HOOK_URL": "http://127.0.0.1:9/hook", "API_TOKEN": "s3cret-token"}


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


async def cli(controller: Running, command: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """The command with the controller's URL and admin key from the environment (in a
    thread: the controller answers from this test's event loop)."""
    environ = {
        "PROBEFLEET_URL": controller.base,
        "PROBEFLEET_API_KEY": controller.admin_key,
        **ENV,
        **(env or {}),
    }
    cmd = getattr(cli_config, command)
    return await asyncio.to_thread(CliRunner().invoke, cmd, list(args), env=environ)


def write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


async def get(controller: Running, path: str) -> object:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession() as s, s.get(controller.base + path, headers=headers) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["data"]


async def monitor_names(controller: Running) -> list[str]:
    data = await get(controller, "/api/v1/monitors?limit=100")
    assert isinstance(data, list)
    return sorted(m["name"] for m in data)


async def test_it_applies_reapplies_changes_and_diffs(controller: Running, tmp_path: Path) -> None:
    path = write(tmp_path, SET)
    first = await cli(controller, "apply", "-f", str(path))
    assert first.exit_code == 0, first.output
    assert "Plan: 10 to create, 0 to update, 0 to delete, 0 unchanged." in first.output
    assert "heartbeat nightly backup: ping http://127.0.0.1:" in first.output
    assert "s3cret-token" not in first.output
    assert await monitor_names(controller) == [
        "API",
        "DB",
        "cert",
        "dns udp",
        "nightly backup",
        "ping",
        "resolver",
    ]
    monitors = {m["name"]: m for m in await get(controller, "/api/v1/monitors?limit=100")}  # type: ignore[union-attr]
    assert monitors["DB"]["parent_id"] == monitors["API"]["id"]
    assert monitors["API"]["check_interval"] == 30 and monitors["API"]["locations"] == ["us-east", "eu-west"]
    assert monitors["API"]["headers"] == {"Authorization": "<redacted>"}

    again = await cli(controller, "apply", "-f", str(path))
    assert again.exit_code == 0, again.output
    assert (
        "0 to create, 0 to update, 0 to delete, 10 unchanged" in again.output
        and "No changes." in again.output
    )
    same = await cli(controller, "diff", "-f", str(path))
    assert same.exit_code == 0, same.output

    path.write_text(textwrap.dedent(SET).replace("port: 5432", "port: 6432"))
    changed = await cli(controller, "diff", "-f", str(path))
    assert changed.exit_code == 1, changed.output
    assert "~ monitor DB (port)" in changed.output
    secret = await cli(controller, "diff", "-f", str(path), env={"API_TOKEN": "rotated"})
    assert "~ monitor api (headers)" in secret.output
    applied = await cli(controller, "apply", "-f", str(path))
    assert applied.exit_code == 0 and "1 updated" in applied.output, applied.output
    assert (await cli(controller, "diff", "-f", str(path))).exit_code == 0


async def test_it_prunes_only_the_owners_resources(controller: Running, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession() as s:
        body = {"name": "by hand", "type": "tcp", "host": "127.0.0.1", "port": 1}
        async with s.post(controller.base + "/api/v1/monitors", json=body, headers=headers) as r:
            assert r.status == 201
    team_a = write(
        tmp_path,
        "monitors:\n- {name: a1, type: icmp, host: 127.0.0.1}\n- {name: a2, type: icmp, host: 127.0.0.1}\n",
        "a.yaml",
    )
    team_b = write(tmp_path, "monitors:\n- {name: b1, type: icmp, host: 127.0.0.1}\n", "b.yaml")
    assert (await cli(controller, "apply", "-f", str(team_a), "--owner", "team-a")).exit_code == 0
    assert (await cli(controller, "apply", "-f", str(team_b), "--owner", "team-b")).exit_code == 0
    team_a.write_text("monitors:\n- {name: a1, type: icmp, host: 127.0.0.1}\n")

    kept = await cli(controller, "apply", "-f", str(team_a), "--owner", "team-a")
    assert kept.exit_code == 0 and "No changes." in kept.output, kept.output
    assert await monitor_names(controller) == ["a1", "a2", "b1", "by hand"]
    diff = await cli(controller, "diff", "-f", str(team_a), "--owner", "team-a")
    assert diff.exit_code == 1 and "- monitor a2" in diff.output

    refused = await cli(controller, "apply", "-f", str(team_a), "--owner", "team-a", "--prune")
    assert refused.exit_code == 2 and "confirm with --yes" in refused.output
    assert await monitor_names(controller) == ["a1", "a2", "b1", "by hand"]
    pruned = await cli(controller, "apply", "-f", str(team_a), "--owner", "team-a", "--prune", "--yes")
    assert pruned.exit_code == 0 and "1 deleted" in pruned.output, pruned.output
    assert await monitor_names(controller) == ["a1", "b1", "by hand"]

    # Without --owner the set is the "default" owner's, which owns none of these.
    default = await cli(controller, "apply", "-f", str(team_a), "--prune", "--yes")
    assert default.exit_code == 0, default.output
    assert await monitor_names(controller) == ["a1", "a1", "b1", "by hand"]


async def test_export_then_apply_is_a_zero_diff(controller: Running, tmp_path: Path) -> None:
    path = write(tmp_path, SET)
    assert (await cli(controller, "apply", "-f", str(path), "--owner", "ops")).exit_code == 0
    out = tmp_path / "export.yaml"
    exported = await cli(controller, "export", "--owner", "ops", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    text = out.read_text()
    assert "s3cret-token" not in text and "<redacted>" in text
    for section in ("monitors:", "heartbeats:", "channels:", "rules:", "maintenance:"):
        assert section in text
    valid = await cli(controller, "validate", "-f", str(out))
    assert valid.exit_code == 0, valid.output
    diff = await cli(controller, "diff", "-f", str(out), "--owner", "ops")
    assert diff.exit_code == 0, diff.output
    assert "0 to create, 0 to update, 0 to delete, 10 unchanged" in diff.output

    everything = tmp_path / "all.yaml"
    assert (await cli(controller, "export", "-o", str(everything))).exit_code == 0
    http_only = await cli(controller, "export", "--type", "http")
    assert http_only.exit_code == 0 and "name: API" in http_only.output and "name: DB" not in http_only.output


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("monitors:\n  - name: a\n    type: http\n    url: [\n", ":5:1:", "malformed YAML"),
        ("monitors:\n  - name: a\n    type: icmp\n    host: x\n    colour: red\n", ":5:5:", "unknown field"),
        (
            "monitors:\n  - name: a\n    type: icmp\n    host: x\n    parent: nope\n",
            ":5:5:",
            "no monitor 'nope'",
        ),
        (
            "monitors:\n  - {name: a, type: icmp, host: x}\n  - {name: a, type: icmp, host: y}\n",
            ":3:",
            "duplicate monitor key 'a'",
        ),
        (
            "channels:\n  - name: c\n    kind: webhook\n    config: {url: '${env:UNSET_HOOK}'}\n",
            ":4:",
            "UNSET_HOOK is not set",
        ),
        ("monitors:\n  - name: a\n    type: http\n    url: ftp://x\n", ":4:5:", "url"),
    ],
    ids=["malformed", "unknown-field", "dangling-reference", "duplicate-key", "unset-env", "server-refusal"],
)
async def test_bad_input_names_file_and_line_and_applies_nothing(
    controller: Running, tmp_path: Path, text: str, where: str, words: str
) -> None:
    path = write(tmp_path, "monitors:\n  - {name: fine, type: icmp, host: 127.0.0.1}\n", "ok.yaml")
    bad = write(tmp_path, text, "bad.yaml")
    result = await cli(controller, "apply", "-f", str(path), "-f", str(bad))
    assert result.exit_code == 2, result.output
    line = next(li for li in result.output.splitlines() if words in li)
    assert f"{bad}{where}" in line, result.output
    assert await monitor_names(controller) == []


async def test_a_server_refusal_mid_apply_applies_nothing(controller: Running, tmp_path: Path) -> None:
    """The third monitor names a region the server does not know: the first two were
    written in the same transaction, and are rolled back with it."""
    text = "monitors:\n" + "".join(
        f"  - {{name: m{i}, type: icmp, host: 127.0.0.1, locations: [{region}]}}\n"
        for i, region in enumerate(["us-east", "eu-west", "mars-north", "us-east"])
    )
    path = write(tmp_path, text)
    assert (await cli(controller, "validate", "-f", str(path))).exit_code == 0
    result = await cli(controller, "apply", "-f", str(path))
    assert result.exit_code == 2, result.output
    assert "monitor 'm2' refused" in result.output
    assert f"{path}:4:" in result.output and "unknown region 'mars-north'" in result.output
    assert await monitor_names(controller) == []


def test_validate_reports_every_problem_offline(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        monitors:
          - {name: a, type: htp}
          - {name: b, type: tcp, host: x, port: "many"}
        rules:
          - {name: r, channels: [nope]}
        """,
    )
    result = CliRunner().invoke(cli_config.validate, ["-f", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{path}:3:" in lines[0] and "unknown type 'htp'" in lines[0]
    assert f"{path}:4:" in lines[1] and "port: expected integer" in lines[1]
    assert f"{path}:6:" in lines[2] and "no channel 'nope'" in lines[2]
    assert lines[3] == "3 problem(s); nothing was applied"


def test_the_published_schema_is_current() -> None:
    expected = json.dumps(file_schema(), indent=2) + "\n"
    for path in (ROOT / "docs" / "config-schema.json", ROOT / "shared" / "config-schema.json"):
        assert path.read_text() == expected, f"{path} is stale: regenerate it (docs/config-as-code.md)"


async def test_the_controller_serves_the_schema(controller: Running) -> None:
    async with aiohttp.ClientSession() as s, s.get(controller.base + "/api/v1/config-schema.json") as r:
        assert r.status == 200
        assert (await r.json())["title"] == "probefleet configuration file"


async def test_the_documented_example_applies(controller: Running, tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "config-as-code.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, example)
    env = {
        "SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/x",
        "PAGERDUTY_KEY": "0123456789abcdef0123456789abcdef",
        "STATUS_PASSWORD": "a long enough password",
    }
    result = await cli(controller, "apply", "-f", str(path), "--owner", "docs", env=env)
    assert result.exit_code == 0, result.output
    again = await cli(controller, "diff", "-f", str(path), "--owner", "docs", env=env)
    assert again.exit_code == 0, again.output


async def test_it_needs_the_scopes_of_the_single_operations(controller: Running, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    made = {}
    async with aiohttp.ClientSession() as s:
        for name, scopes in (("reader", ["monitors:read"]), ("writer", ["monitors:write", "monitors:read"])):
            body = {"name": name, "scopes": scopes}
            async with s.post(controller.base + "/api/v1/api-keys", json=body, headers=headers) as r:
                assert r.status == 201, await r.text()
                made[name] = (await r.json())["data"]["key"]
    monitors_only = write(tmp_path, "monitors:\n  - {name: a, type: icmp, host: 127.0.0.1}\n", "m.yaml")
    reader = {"PROBEFLEET_API_KEY": made["reader"]}
    looked = await cli(controller, "diff", "-f", str(monitors_only), env=reader)
    assert looked.exit_code == 1 and "+ monitor a" in looked.output, looked.output
    refused = await cli(controller, "apply", "-f", str(monitors_only), "--yes", env=reader)
    assert refused.exit_code == 1 and "lacks the scope 'monitors:write'" in refused.output, refused.output
    writer = {"PROBEFLEET_API_KEY": made["writer"]}
    applied = await cli(controller, "apply", "-f", str(monitors_only), env=writer)
    assert applied.exit_code == 0, applied.output
    with_channel = write(tmp_path, SET, "set.yaml")
    refused = await cli(controller, "apply", "-f", str(with_channel), env=writer)
    assert refused.exit_code == 1 and "lacks the scope 'notifications:" in refused.output
    assert await monitor_names(controller) == ["a"]
    # The admin's set of the same owner holds channels: pruning it needs notifications too.
    assert (await cli(controller, "apply", "-f", str(with_channel))).exit_code == 0
    pruned = await cli(controller, "apply", "-f", str(monitors_only), "--prune", "--yes", env=writer)
    assert pruned.exit_code == 1 and "lacks the scope 'notifications:read'" in pruned.output
    # Status pages need status_pages:write, regions fleet:admin.
    page = "status_pages:\n  - {name: p, slug: p, sections: [{monitors: [a]}]}\n"
    with_page = write(tmp_path, "monitors:\n  - {name: a, type: icmp, host: 127.0.0.1}\n" + page, "p.yaml")
    refused = await cli(controller, "apply", "-f", str(with_page), "--owner", "w", env=writer)
    assert refused.exit_code == 1 and "lacks the scope 'status_pages:" in refused.output, refused.output
    with_region = write(tmp_path, "regions:\n  - {name: eu-north}\n", "r.yaml")
    refused = await cli(controller, "apply", "-f", str(with_region), "--owner", "w", env=writer)
    assert refused.exit_code == 1 and "lacks the scope 'fleet:admin'" in refused.output, refused.output


async def test_a_change_of_each_kind_is_planned_by_field(controller: Running, tmp_path: Path) -> None:
    path = write(tmp_path, SET)
    assert (await cli(controller, "apply", "-f", str(path))).exit_code == 0
    changed = (
        textwrap.dedent(SET)
        .replace("    monitors: [api]\nmonitors:", "    monitors: [api, DB]\nmonitors:")
        .replace("duration: 3600", "duration: 7200")
        .replace("grace_period: 3600", "grace_period: 600")
    )
    path.write_text(changed)
    env = {"HOOK_URL": "http://127.0.0.1:9/other-hook"}
    diff = await cli(controller, "diff", "-f", str(path), env=env)
    assert diff.exit_code == 1, diff.output
    for line in (
        "~ channel ops (config)",
        "~ rule api rule (monitors)",
        "~ window patch tuesday (duration)",
        "~ monitor nightly backup (grace_period)",
        "0 to create, 4 to update, 0 to delete, 6 unchanged",
    ):
        assert line in diff.output, diff.output
    assert "other-hook" not in diff.output
    assert (await cli(controller, "apply", "-f", str(path), env=env)).exit_code == 0
    assert (await cli(controller, "diff", "-f", str(path), env=env)).exit_code == 0


async def test_two_applies_of_one_owner_at_once_make_each_resource_once(
    controller: Running, tmp_path: Path
) -> None:
    path = write(tmp_path, SET)
    first, second = await asyncio.gather(
        cli(controller, "apply", "-f", str(path), "--owner", "race", "--yes"),
        cli(controller, "apply", "-f", str(path), "--owner", "race", "--yes"),
    )
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert await monitor_names(controller) == [
        "API",
        "DB",
        "cert",
        "dns udp",
        "nightly backup",
        "ping",
        "resolver",
    ]
    assert (await cli(controller, "diff", "-f", str(path), "--owner", "race")).exit_code == 0


# A 1x1 PNG's first bytes are enough for the logo check (its magic number).
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
PAGES = f"""
regions:
  - {{name: eu-north, city: Stockholm, country_code: SE}}
monitors:
  - {{name: API, ref: api, type: icmp, host: 127.0.0.1, locations: [eu-north]}}
  - {{name: DB, ref: db, type: tcp, host: 127.0.0.1, port: 5432}}
status_pages:
  - name: Public status
    ref: public
    slug: public-status
    description: Our services
    password: ${{env:PAGE_PASSWORD}}
    colors: {{accent: "#1a7f37"}}
    logo: "{PNG}"
    sections:
      - name: Web
        monitors: [api, {{monitor: db, display_name: Database, description: Orders and carts}}]
      - name: Internal
        monitors: []
"""


async def test_status_pages_and_regions_apply_diff_export_and_prune(
    controller: Running, tmp_path: Path
) -> None:
    env = {"PAGE_PASSWORD": "correct horse"}
    path = write(tmp_path, PAGES)
    first = await cli(controller, "apply", "-f", str(path), "--owner", "web", env=env)
    assert first.exit_code == 0, first.output
    assert "Plan: 4 to create" in first.output and "correct horse" not in first.output
    region = await get(controller, "/api/v1/regions/eu-north")
    assert isinstance(region, dict) and (region["city"], region["country_code"]) == ("Stockholm", "SE")
    (page,) = await get(controller, "/api/v1/status-pages")  # type: ignore[misc]
    assert page["slug"] == "public-status" and page["has_password"] and page["logo_url"]
    assert page["colors"] == {"accent": "#1a7f37"}
    assert [(s["name"], [c["display_name"] for c in s["monitors"]]) for s in page["sections"]] == [
        ("Web", ["API", "Database"])
    ]
    assert [c["description"] for c in page["sections"][0]["monitors"]] == ["", "Orders and carts"]
    same = await cli(controller, "diff", "-f", str(path), "--owner", "web", env=env)
    assert same.exit_code == 0 and "4 unchanged" in same.output, same.output

    changed_text = textwrap.dedent(PAGES).replace("display_name: Database", "display_name: Primary DB")
    path.write_text(changed_text.replace("city: Stockholm", "city: Lulea"))
    changed = await cli(controller, "diff", "-f", str(path), "--owner", "web", env=env)
    assert changed.exit_code == 1, changed.output
    assert (
        "~ status_page public (sections)" in changed.output and "~ region eu-north (city)" in changed.output
    )
    rotated = await cli(
        controller, "diff", "-f", str(path), "--owner", "web", env={"PAGE_PASSWORD": "new secret!"}
    )
    assert "~ status_page public (password, sections)" in rotated.output, rotated.output
    assert (await cli(controller, "apply", "-f", str(path), "--owner", "web", env=env)).exit_code == 0
    # A component's description alone is a change of the page's sections.
    described = tmp_path / "described.yaml"
    described.write_text(path.read_text().replace("description: Orders and carts", "description: Orders"))
    redescribed = await cli(controller, "diff", "-f", str(described), "--owner", "web", env=env)
    assert redescribed.exit_code == 1 and "1 to update" in redescribed.output, redescribed.output
    assert "~ status_page public (sections)" in redescribed.output, redescribed.output

    # Export (everything: regions have no owner) then apply: nothing changes.
    out = tmp_path / "export.yaml"
    exported = await cli(controller, "export", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    text = out.read_text()
    assert "status_pages:" in text and "regions:" in text and "correct horse" not in text
    assert "password: <redacted>" in text and "display_name: Primary DB" in text and "data:image/png" in text
    assert "description: Orders and carts" in text
    valid = await cli(controller, "validate", "-f", str(out))
    assert valid.exit_code == 0, valid.output
    diff = await cli(controller, "diff", "-f", str(out), "--owner", "web")
    assert diff.exit_code == 0 and "0 to create, 0 to update, 0 to delete" in diff.output, diff.output

    # Prune: the page goes, the region stays (regions are never pruned).
    path.write_text("monitors:\n  - {name: API, ref: api, type: icmp, host: 127.0.0.1}\n")
    pruned = await cli(controller, "apply", "-f", str(path), "--owner", "web", "--prune", "--yes")
    assert pruned.exit_code == 0 and "- status_page public" in pruned.output, pruned.output
    assert await get(controller, "/api/v1/status-pages") == []
    assert isinstance(await get(controller, "/api/v1/regions/eu-north"), dict)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "status_pages:\n  - name: p\n    slug: p\n    sections:\n      - monitors: [nope]\n",
            ":5:20: status_pages[p].sections[0].monitors[0]: no monitor 'nope' in these files",
        ),
        (
            "status_pages:\n  - name: p\n    slug: p\n    incident_status: identified\n",
            ":4:5: status_pages[0].incident_status: unknown field",
        ),
        ("regions:\n  - {name: Not Valid}\n", ":2:6: regions[0].name: must match"),
    ],
    ids=["dangling-component", "incident-banner", "bad-region-name"],
)
def test_bad_pages_and_regions_are_refused_offline(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli_config.validate, ["-f", str(path)])
    assert result.exit_code == 2 and f"{path}{words}" in result.output, result.output


async def test_the_server_refuses_a_page_naming_no_monitor_of_the_set(controller: Running) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    body = {
        "owner": "web",
        "status_pages": [{"key": "p", "name": "p", "slug": "p", "sections": [{"monitors": ["nope"]}]}],
        "regions": [{"key": "eu-south", "name": "eu-south"}],
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(controller.base + "/api/v1/apply", json=body, headers=headers) as r,
    ):
        assert r.status == 422
        error = (await r.json())["error"]
    assert error["details"] == {
        "status_pages[p].sections[0].monitors[0].monitor": "no such resource in this apply set"
    }
    async with (
        aiohttp.ClientSession() as s,
        s.get(controller.base + "/api/v1/regions/eu-south", headers=headers) as r,
    ):
        assert r.status == 404  # nothing applied: the region of the same set was rolled back


async def test_a_slug_another_page_holds_is_a_conflict_naming_the_page(controller: Running) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_key}"}
    async with aiohttp.ClientSession(base_url=controller.base, headers=headers) as s:
        async with s.post("/api/v1/status-pages", json={"name": "by hand", "slug": "taken"}) as r:
            assert r.status == 201
        body = {"owner": "web", "status_pages": [{"key": "mine", "name": "mine", "slug": "taken"}]}
        async with s.post("/api/v1/apply", json=body) as r:
            assert r.status == 409
            error = (await r.json())["error"]
        assert error["details"] == {"status_pages[mine].slug": "already in use"}
        assert "status page 'mine'" in error["message"]
        async with s.get("/api/v1/status-pages") as r:
            assert [p["name"] for p in (await r.json())["data"]] == ["by hand"]
