from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from click.testing import CliRunner

from probefleet.probe import cli as probe_cli
from probefleet.probe.cli import KIND_OPTIONS, _spec_fields, probe
from probefleet.probe.config import ProbeConfig
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import NatsServer
from probefleet.shared.wire import PROBE_KINDS
from tests.helpers import eventually

CLI = [sys.executable, "-m", "probefleet.shared.cli", "probe"]


async def cli(*args: str, netns: bool = False) -> tuple[int, str, str]:
    cmd = (["unshare", "-n"] if netns else []) + CLI + list(args)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_it_runs_one_http_check_and_prints_json(http_target: str) -> None:
    code, out, _ = await cli("check", "--kind", "http", "--url", f"{http_target}/json", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["kind"], data["status"], data["status_code"]) == ("http", "ok", 200)
    assert data["timings"]["total"] > 0


async def test_it_prints_a_readable_failure_and_exits_1(http_target: str) -> None:
    code, out, _ = await cli("check", "--kind", "http", "--url", f"{http_target}/", "--expect", "maintenance")
    assert code == 1
    assert out.startswith("fail     http  keyword_missing  HTTP 200")


async def test_it_prints_a_failure_s_body_as_text(http_target: str) -> None:
    """The evidence's body, which travels compressed when over 1 KiB, prints as text."""
    sent = "upstream reset " * 200
    url = f"{http_target}/echo"
    args = ["--method", "POST", "--body", sent, "--expect", "maintenance", "--json"]
    code, out, _ = await cli("check", "--kind", "http", "--url", url, *args)
    assert code == 1
    evidence = json.loads(out)["details"]["evidence"]
    assert json.loads(evidence["body"])["body"] == sent and "body_gzip" not in evidence


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "http"], "missing option --url"),
        (["--kind", "gopher"], "'gopher' is not one of"),
        (["--kind", "tcp", "--host", "127.0.0.1"], "missing option --port"),
        (["--kind", "http", "--url", "http://x/", "--header", "nocolon"], "use 'Name: value'"),
        (["--kind", "icmp", "--host", "h", "--max-packet-loss", "2"], "--max-packet-loss"),
        (["--kind", "dns", "--name", "x", "--match", "some"], "--match"),
    ],
    ids=["no-url", "bad-kind", "no-port", "bad-header", "loss-range", "bad-match"],
)
def test_it_rejects_bad_arguments_with_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(probe, ["check", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (
            ["--kind", "tcp", "--host", "127.0.0.1", "--port", "1", "--method", "POST"],
            ["--method does not apply to --kind tcp (only to http)"],
        ),
        (
            ["--kind", "udp", "--host", "h", "--port", "1", "--insecure", "--header", "A: b"],
            [
                "--insecure does not apply to --kind udp (only to http, tcp, tls)",
                "--header does not apply to --kind udp (only to http)",
            ],
        ),
        (
            ["--kind", "tls", "--host", "h", "--degraded-ms", "5"],
            ["--degraded-ms does not apply to --kind tls (only to http, tcp, udp, icmp, dns)"],
        ),
        (
            ["--kind", "icmp", "--host", "h", "--no-follow-redirects"],
            ["--follow-redirects/--no-follow-redirects does not apply to --kind icmp (only to http)"],
        ),
        (
            ["--kind", "http", "--url", "http://127.0.0.1:1/", "--max-redirects", "10", "--count", "3"],
            ["--count does not apply to --kind http (only to icmp)"],
        ),
    ],
    ids=["method-tcp", "two-for-udp", "degraded-tls", "no-follow-icmp", "count-http"],
)
def test_it_refuses_options_the_kind_does_not_take(args: list[str], messages: list[str]) -> None:
    result = CliRunner().invoke(probe, ["check", *args])
    assert result.exit_code == 2, result.output
    for message in messages:
        assert message in result.output
    assert "--max-redirects" not in result.output  # given, and it applies to http


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_each_kind_reads_exactly_the_options_it_takes(kind: str) -> None:
    read: set[str] = set()

    class Reads(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            read.add(key)
            return ()

    _spec_fields(kind, Reads())
    assert read == set(KIND_OPTIONS[kind])


def test_every_check_option_belongs_to_some_kind() -> None:
    command = probe.commands["check"]
    general = {"kind", "budget", "source_address", "as_json"}
    assert {p.name for p in command.params} - general == {n for names in KIND_OPTIONS.values() for n in names}


def test_it_rejects_a_bad_region_with_exit_2() -> None:
    result = CliRunner().invoke(probe, ["run", "--region", "EU West"])
    assert result.exit_code == 2
    assert "lower-case letters" in result.output


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ProbeConfig]:
    """The config `probe run` would serve; the agent itself does not start."""
    seen: list[ProbeConfig] = []

    async def serve(config: ProbeConfig) -> None:
        seen.append(config)

    for name in [n for n in os.environ if n.startswith("PROBEFLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PROBEFLEET_NATS_INSECURE", "true")
    monkeypatch.setattr(probe_cli, "_serve", serve)
    return seen


@pytest.mark.parametrize(
    ("file", "env", "args", "region"),
    [
        ('region = "eu-west"', {}, [], "eu-west"),
        ("", {"PROBEFLEET_REGION": "us-east"}, [], "us-east"),
        ("", {"PROBEFLEET_REGION_FILE": "{tmp}/region"}, [], "ap-south"),
        ("", {"PROBEFLEET_REGION": "", "PROBEFLEET_REGION_FILE": "{tmp}/region"}, [], "ap-south"),
        ("", {}, ["--region", "eu-west"], "eu-west"),
        ('region = "eu-west"', {"PROBEFLEET_REGION_FILE": "{tmp}/region"}, [], "ap-south"),
        ('region = "eu-west"', {"PROBEFLEET_REGION": "us-east"}, ["--region", "moon-1"], "moon-1"),
    ],
    ids=["file", "variable", "file-variable", "empty-variable", "option", "env-over-file", "option-over-all"],
)
def test_run_takes_the_region_from_any_source(
    served: list[ProbeConfig],
    tmp_path: Path,
    file: str,
    env: dict[str, str],
    args: list[str],
    region: str,
) -> None:
    (tmp_path / "region").write_text("ap-south\n")
    config = tmp_path / "probe.toml"
    config.write_text(file + "\n")
    env = {name: value.format(tmp=tmp_path) for name, value in env.items()}
    result = CliRunner().invoke(probe, ["run", "--config", str(config), *args], env=env)
    assert result.exit_code == 0, result.output
    assert [c.region for c in served] == [region]


def test_run_names_every_way_to_give_a_region(served: list[ProbeConfig]) -> None:
    result = CliRunner().invoke(probe, ["run"])
    assert result.exit_code == 2 and not served
    for source in (
        "`region` in the --config file",
        "PROBEFLEET_REGION ",
        "PROBEFLEET_REGION_FILE",
        "--region",
    ):
        assert source in result.output
    assert "Traceback" not in result.output


def test_run_names_an_unreadable_region_file(served: list[ProbeConfig], tmp_path: Path) -> None:
    env = {"PROBEFLEET_REGION_FILE": str(tmp_path / "missing")}
    result = CliRunner().invoke(probe, ["run"], env=env)
    assert result.exit_code == 2 and not served
    assert "PROBEFLEET_REGION_FILE=" in result.output and "No such file" in result.output


async def test_run_serves_the_region_of_its_config_file(nats_url: str, tmp_path: Path) -> None:
    config = tmp_path / "probe.toml"
    config.write_text(f'region = "eu-west"\nnats_url = "{nats_url}"\nheartbeat_interval = 0.1\n')
    nc = await nats.connect(nats_url)
    heartbeats = await nc.subscribe(subjects.heartbeat("eu-west"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBEFLEET_")}
    env["PROBEFLEET_NATS_INSECURE"] = "true"
    proc = await asyncio.create_subprocess_exec(*CLI, "run", "--config", str(config), env=env)
    try:
        beat = wire.decode_heartbeat((await heartbeats.next_msg(timeout=20)).data)
        assert beat.region == "eu-west"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await nc.close()


async def test_run_serves_healthz_and_stops_cleanly_while_nats_is_away(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """/healthz and /readyz through `probe run` (the image's HEALTHCHECK and the chart's
    probes), and a SIGTERM while NATS is gone still ends in a clean exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBEFLEET_")}
    env |= {"PROBEFLEET_NATS_INSECURE": "true", "PROBEFLEET_NATS_URL": nats_server.url}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", "--region", "eu-west", "--metrics-listen", f"127.0.0.1:{port}", env=env, stderr=err
        )
    try:
        async with aiohttp.ClientSession() as http:

            async def status(path: str) -> int:
                try:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        return resp.status
                except aiohttp.ClientConnectionError:
                    return 0

            assert await eventually(_is(200, status, "/healthz"), timeout=20, what="/healthz 200")
            assert await status("/readyz") == 200
            nats_server.stop()
            assert await eventually(
                _is(503, status, "/healthz"), timeout=10, what="/healthz 503 without NATS"
            )
            assert await status("/readyz") == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert "Traceback" not in stderr.read_text()
    assert code == 0


def _is(want: int, status: Any, path: str) -> Any:
    async def check() -> bool:
        return bool(await status(path) == want)

    return check


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs netns")
async def test_it_reports_an_unresolvable_host_as_dns_error() -> None:
    # In a private network namespace no resolver is reachable and nothing leaves the box.
    code, out, _ = await cli(
        "check", "--kind", "http", "--url", "http://nonexistent.example/", "--json", netns=True
    )
    assert code == 1
    assert json.loads(out)["reason"] == "dns_error"


async def test_it_runs_a_diagnosis_with_a_tcp_traceroute_by_hand() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.27", 0))
        server.listen(8)
        port = str(server.getsockname()[1])
        code, out, _ = await cli(
            "check", "--kind", "diagnose", "--host", "127.0.0.27", "--port", port, "--tcp-trace", "--json"
        )
        assert code == 0, out
        route = json.loads(out)["details"]["traceroute"]
        assert (route["method"], route["reached"], route["port_state"]) == ("tcp", True, "open")
        code, out, _ = await cli(
            "check", "--kind", "diagnose", "--host", "127.0.0.27", "--port", port, "--json"
        )
        assert json.loads(out)["details"]["traceroute"]["method"] == "udp"
