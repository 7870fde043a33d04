"""`probefleet region ...` against a real controller (its API over HTTP on loopback)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from click.testing import CliRunner, Result

from probefleet.shared import natscreds
from probefleet.shared.apiclient import ApiClient, ApiClientError, check_url
from probefleet.shared.cli import main
from probefleet.shared.region_cli import parse_duration
from tests.controller.conftest import Running, start_controller


@pytest.fixture
async def controller(database: str, nats_url: str) -> AsyncIterator[Running]:
    running = await start_controller(database, nats_url)
    yield running
    await running.stop()


async def cli(controller: Running, *args: str, key: str | None = None) -> Result:
    """`probefleet region ARGS` with the controller's URL and a key from the environment
    (run in a thread: the controller answers from this test's event loop)."""
    env = {"PROBEFLEET_URL": controller.base, "PROBEFLEET_API_KEY": key or controller.admin_key}
    return await asyncio.to_thread(CliRunner().invoke, main, ["region", *args], env=env)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("7D", 604800)]
)
def test_it_reads_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "h", "-1h", "1.5h"])
def test_it_refuses_other_durations(text: str) -> None:
    with pytest.raises(ValueError, match="use a number with s, m, h or d"):
        parse_duration(text)


def test_it_wants_https_unless_loopback() -> None:
    assert check_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_url("http://localhost:8080") == "http://localhost:8080"
    assert check_url("http://[::1]:8080") == "http://[::1]:8080"
    assert check_url("https://controller.example") == "https://controller.example"
    assert check_url("http://controller.example", allow_http=True) == "http://controller.example"
    for url, words in (
        ("http://controller.example", "is not https"),
        ("http://10.0.0.1", "is not https"),
        ("ftp://controller.example", "is not an http"),
        ("controller.example", "is not an http"),
    ):
        with pytest.raises(ValueError, match=words):
            check_url(url)


async def test_it_creates_lists_and_enrolls_a_region(controller: Running) -> None:
    made = await cli(
        controller, "create", "eu-central", "--display-name", "Frankfurt", "--country-code", "DE"
    )
    assert made.exit_code == 0 and made.output == "region eu-central created\n", made.output
    listed = await cli(controller, "list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == [
        "NAME",
        "DISPLAY",
        "NAME",
        "LIVE",
        "ENROLLED",
        "CAPACITY",
        "IN",
        "FLIGHT",
        "VERSIONS",
        "OUTDATED",
        "RESULTS/JOBS",
        "DELAY",
        "P99",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["us-east", "eu-west", "ap-south", "eu-central"]
    assert lines[-1].split() == ["eu-central", "Frankfurt", "0", "0", "0", "0", "-", "0", "0/0", "-"]
    as_json = json.loads((await cli(controller, "list", "--json")).output)
    assert as_json[-1]["name"] == "eu-central" and as_json[-1]["country_code"] == "DE"

    enrolled = await cli(controller, "enroll", "eu-central", "--expires", "30m", "--uses", "2")
    assert enrolled.exit_code == 0, enrolled.output
    token = re.search(r"^  (pfe_\S+)$", enrolled.output, re.M)
    assert token is not None, enrolled.output
    assert "region eu-central (2 use(s)" in enrolled.output
    assert f"probefleet probe run --enroll {token[1]} --controller {controller.base}\n" in enrolled.output
    assert f"-e PROBEFLEET_ENROLL_TOKEN={token[1]} -e PROBEFLEET_CONTROLLER_URL={controller.base}" in (
        enrolled.output
    )
    only = await cli(controller, "enroll", "eu-central", "--token-only", "--controller", "https://c.example")
    assert re.fullmatch(r"pfe_\S+\n", only.output), only.output

    # The printed token enrolls a probe; `region probes` shows it, `region revoke` revokes it.
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post(
            "/api/v1/enroll",
            json={"token": token[1], "public_key": natscreds.new_user_keypair()[1], "host": "edge-1"},
        )
        assert r.status == 201, await r.text()
        probe_id = (await r.json())["data"]["probe_id"]
    probes = await cli(controller, "probes", "eu-central")
    assert probes.exit_code == 0
    assert probes.output.splitlines()[1].split() == [probe_id, "offline", "edge-1", "-", "-", "-", "active"]
    revoked = await cli(controller, "revoke", probe_id)
    assert revoked.exit_code == 0 and revoked.output == f"probe {probe_id} revoked\n"
    again = json.loads((await cli(controller, "probes", "eu-central", "--json")).output)
    assert again == []

    listed = (await cli(controller, "tokens", "eu-central")).output.splitlines()
    assert [line.split()[2:4] for line in listed[1:]] == [["active", "1/2"], ["active", "0/-"]]
    assert token[1] not in "".join(listed) and listed[1].split()[1] == token[1][:12] + "..."
    first = listed[1].split()[0]
    gone = await cli(controller, "revoke-token", "eu-central", first)
    assert gone.exit_code == 0 and gone.output == f"enrollment token {first} revoked\n"
    assert (
        json.loads((await cli(controller, "tokens", "eu-central", "--json")).output)[0]["state"] == "revoked"
    )
    deleted = await cli(controller, "delete", "eu-central")
    assert deleted.exit_code == 0 and deleted.output == "region eu-central deleted\n"
    assert (await cli(controller, "delete", "eu-central")).exit_code == 1


async def test_it_says_why_a_request_is_refused(controller: Running) -> None:
    for args, code, words in (
        (["enroll", "nowhere"], 1, "error: HTTP 404: region not found"),
        (["revoke", "nobody"], 1, "error: HTTP 404: probe not found"),
        (["create", "Bad.Name"], 1, "error: HTTP 422: Validation failed (name:"),
        (["create", "eu-west"], 1, "error: HTTP 409: region 'eu-west' exists"),
        (["enroll", "eu-west", "--expires", "soon"], 2, "'soon': use a number with s, m, h or d"),
        (["enroll", "eu-west", "--uses", "0"], 2, "--uses"),
        (["create"], 2, "Missing argument 'NAME'"),
    ):
        result = await cli(controller, *args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output, (args, result.output)
        assert "Traceback" not in result.output
    refused = await cli(controller, "list", key="pf_not_a_key_at_all_really")
    assert refused.exit_code == 1 and "error: HTTP 401: invalid, revoked or expired API key" in refused.output


async def test_it_says_when_the_controller_cannot_be_reached() -> None:
    env = {"PROBEFLEET_URL": "http://127.0.0.1:9", "PROBEFLEET_API_KEY": "pf_x"}
    result = await asyncio.to_thread(CliRunner().invoke, main, ["region", "list"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach the controller at http://127.0.0.1:9: ")
    bad = await asyncio.to_thread(CliRunner().invoke, main, ["region", "--url", "c.example", "list"], env=env)
    assert bad.exit_code == 2 and "use an http:// or https:// URL" in bad.output


async def test_the_client_raises_readable_errors(controller: Running) -> None:
    client = ApiClient(controller.base, controller.admin_key)
    regions = await asyncio.to_thread(client.data, "GET", "/api/v1/regions")
    assert [r["name"] for r in regions][:1] == ["us-east"]
    with pytest.raises(ApiClientError) as refused:
        await asyncio.to_thread(client.data, "POST", "/api/v1/regions", {"name": "x", "latitude": 100})
    assert refused.value.status == 422 and "latitude" in refused.value.details
