from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys

import pytest
from click.testing import CliRunner

from probe.cli import probe

CLI = [sys.executable, "-m", "shared.cli", "probe"]


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


def test_it_rejects_a_bad_region_with_exit_2() -> None:
    result = CliRunner().invoke(probe, ["run", "--region", "EU West"])
    assert result.exit_code == 2
    assert "lower-case letters" in result.output


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs netns")
async def test_it_reports_an_unresolvable_host_as_dns_error() -> None:
    # In a private network namespace no resolver is reachable and nothing leaves the box.
    code, out, _ = await cli(
        "check", "--kind", "http", "--url", "http://nonexistent.example/", "--json", netns=True
    )
    assert code == 1
    assert json.loads(out)["reason"] == "dns_error"
