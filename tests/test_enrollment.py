"""Enrollment end to end on the secure path: a token from the API, the probe's enroll step
against a real controller over HTTP, the probe on an operator-mode TLS nats-server with the
credential it got, taking its region's jobs; then revoked, and cut off by NATS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from probefleet.controller import keys
from probefleet.controller.api import fleet as fleet_api
from probefleet.controller.storage import fleet as store
from probefleet.probe import enroll
from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig
from probefleet.shared import natscreds
from probefleet.shared.cli import main
from tests.controller.conftest import Running, start_controller
from tests.fleet import RegionalTarget, SecureNats
from tests.helpers import eventually


@pytest.fixture
async def secure_controller(database: str, secure_nats: SecureNats) -> AsyncIterator[Running]:
    running = await start_controller(
        database, secure_nats.url, fleet_trust_dir=str(secure_nats.trust_dir), nats_insecure=False
    )
    yield running
    await running.stop()


@pytest.fixture
async def target() -> AsyncIterator[RegionalTarget]:
    t = RegionalTarget()
    await t.start()
    yield t
    await t.stop()


async def token_for(ctl: Running, region: str, **body: Any) -> str:
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
        r = await api.post(f"/api/v1/regions/{region}/enrollment-tokens", json=body)
        assert r.status == 201, await r.text()
        return str((await r.json())["data"]["token"])


async def test_a_probe_enrolls_takes_jobs_and_is_cut_off_when_revoked(
    secure_controller: Running, target: RegionalTarget, tmp_path: Path
) -> None:
    ctl = secure_controller
    token = await token_for(ctl, "eu-west", max_uses=1)
    state_dir = tmp_path / "state"
    state = await asyncio.to_thread(enroll.enroll, ctl.base, token, state_dir, host="probe-host-1")
    assert state.region == "eu-west" and state.credentials and state.ca_file
    creds = state_dir / state.credentials
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert natscreds.read_creds_jwt(creds)
    assert token not in "".join(p.read_text() for p in state_dir.iterdir())
    # A later start finds the enrollment: same id, nothing asked of the controller.
    again = enroll.load_state(state_dir)
    assert again is not None and again.probe_id == state.probe_id
    checked = CliRunner().invoke(main, ["probe", "check-config", "--state-dir", str(state_dir)])
    assert checked.exit_code == 0, checked.output
    shown = json.loads(checked.output)
    assert (shown["probe_id"], shown["region"], shown["nats_credentials"]) == (
        state.probe_id,
        "eu-west",
        str(creds),
    )

    cfg = ProbeConfig(
        **enroll.config_overrides(state, state_dir),  # type: ignore[arg-type]
        heartbeat_interval=0.5,
        source_address="127.0.0.12",
    )
    agent = Agent(cfg)
    await agent.start()
    headers = {"Authorization": f"Bearer {ctl.admin_key}"}
    try:
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:
            body = {
                "name": "t",
                "url": target.url,
                "check_interval": 1,
                "timeout": 2,
                "locations": ["eu-west"],
            }
            r = await api.post("/api/v1/monitors", json=body)
            assert r.status == 201, await r.text()
            mid = (await r.json())["data"]["id"]

            async def taken() -> bool:
                probe = await ctl.app[keys.POOL].fetchval(
                    "SELECT probe_id FROM check_results WHERE monitor_id = $1 LIMIT 1", mid
                )
                return probe == state.probe_id

            await eventually(taken, what="a result from the enrolled probe")
            probes = (await (await api.get("/api/v1/regions/eu-west/probes")).json())["data"]
            mine = next(p for p in probes if p["probe_id"] == state.probe_id)
            assert mine["live"] and mine["credential"] == "active" and mine["host"] == "probe-host-1"

            r = await api.delete(f"/api/v1/probes/{state.probe_id}")
            assert r.status == 204, await r.text()
            # NATS closes the revoked probe's connection: the agent learns it was refused.
            await asyncio.wait_for(agent.refused.wait(), 10)
            assert "revoked" in agent.refused_reason
    finally:
        await agent.abort()
    cred = await store.get_credential(ctl.app[keys.POOL], state.probe_id)
    assert cred is not None and cred["revoked_at"] is not None


def _probe(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`probefleet probe run ARGS`, its output into `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "probefleet.shared.cli", "probe", "run", *args],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


async def test_probe_run_enrolls_from_the_environment_and_refuses_bad_tokens(
    secure_controller: Running, tmp_path: Path
) -> None:
    ctl = secure_controller
    state_dir = tmp_path / "state"
    bad = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "probefleet.shared.cli", "probe", "run"],
        env={
            **os.environ,
            "PROBEFLEET_ENROLL_TOKEN": "pfe_" + "x" * 43,
            "PROBEFLEET_CONTROLLER_URL": ctl.base,
            "PROBEFLEET_STATE_DIR": str(state_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: enrollment refused: HTTP 401: unknown enrollment token"
    ]
    assert not state_dir.exists()
    # https unless loopback: a remote http controller is refused before anything is sent.
    remote = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "probefleet.shared.cli", "probe", "run", "--enroll", "pfe_x"],
        env={
            **os.environ,
            "PROBEFLEET_CONTROLLER_URL": "http://controller.example",
            "PROBEFLEET_STATE_DIR": str(state_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        remote.returncode == 1
        and "is not https" in remote.stderr
        and "--insecure-controller" in remote.stderr
    )
    assert not state_dir.exists()

    token = await token_for(ctl, "ap-south")
    env = {"PROBEFLEET_ENROLL_TOKEN": token, "PROBEFLEET_CONTROLLER_URL": ctl.base}
    log = tmp_path / "probe.log"
    proc = _probe(log, "--state-dir", str(state_dir), env=env)
    try:
        state = await eventually(lambda: enroll.load_state(state_dir), what="the enrollment's state file")
        headers = {"Authorization": f"Bearer {ctl.admin_key}"}
        async with aiohttp.ClientSession(base_url=ctl.base, headers=headers) as api:

            async def live() -> bool:
                probes = (await (await api.get("/api/v1/regions/ap-south/probes")).json())["data"]
                return any(p["probe_id"] == state.probe_id and p["live"] for p in probes)

            await eventually(live, what="the enrolled probe's heartbeats")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, log.read_text()
    assert f"enrolled probe_id={state.probe_id} region=ap-south" in log.read_text()
    assert token not in log.read_text()
    # A restart with the same state directory keeps its id (the token is not used again).
    proc = _probe(log, "--state-dir", str(state_dir), env=env)
    try:
        await eventually(lambda: "already enrolled" in log.read_text(), what="the restart's log line")
        assert f"probe started probe_id={state.probe_id}" in await eventually(
            lambda: "probe started" in log.read_text() and log.read_text(), what="the restarted probe"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    tokens = await store.list_tokens(ctl.app[keys.POOL], "ap-south")
    assert tokens[0]["uses"] == 1


REPO = Path(__file__).resolve().parent.parent


def _readme_blocks() -> list[str]:
    """The shell blocks of the README's "Adding a region"."""
    section = (REPO / "README.md").read_text().split("## Adding a region\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


async def test_the_readme_adds_a_region(secure_controller: Running, tmp_path: Path) -> None:
    """The README's commands as they are written, aimed at this controller (its port, and a
    data folder holding its admin key)."""
    ctl = secure_controller
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.key").write_text(ctl.admin_key)
    port = ctl.base.rsplit(":", 1)[1]
    blocks = [
        b.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(".probefleet/", f"{data}/")
        for b in _readme_blocks()
    ]
    assert len(blocks) == 3 and all("127.0.0.1:8080" not in b for b in blocks)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PROBEFLEET_API_KEY", None)
    # `probefleet region` talks to http://127.0.0.1:8080 unless told otherwise: here, this one.
    env["PROBEFLEET_URL"] = ctl.base
    env.pop("PROBEFLEET_NATS_INSECURE", None)  # the probe runs on its enrolled credential
    script = "set -euo pipefail\n" + blocks[0] + blocks[1]
    shell = subprocess.Popen(
        ["bash", "-c", script + "\nwait"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        async def live() -> str | None:
            probes = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-c", f"export PROBEFLEET_API_KEY=$(cat {data}/admin.key)\n{blocks[2]}"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if "region not found" in probes.stderr:
                return None  # the first block has not created it yet
            assert probes.returncode == 0, probes.stderr
            rows = probes.stdout.splitlines()[1:]
            return probes.stdout if any(r.split()[1] == "live" for r in rows) else None

        shown = await eventually(live, what="the README's probe live in eu-central")
        assert shown.splitlines()[1].split()[0].startswith("eu-central-")
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        out, _ = await asyncio.to_thread(shell.communicate, timeout=30)
    assert "Enrollment token for region eu-central (1 use(s)" in out, out
    assert "region eu-central created" in out
    log = (data / "probe-eu-central.log").read_text()
    assert "enrolled probe_id=eu-central-" in log and "pfe_" not in log


async def test_a_revocation_nats_missed_is_pushed_by_the_sync_step(
    secure_controller: Running, secure_nats: SecureNats, tmp_path: Path
) -> None:
    """A revoke stored while NATS did not take the push (the client got a 503) reaches NATS
    at the next sync step, which then has nothing more to do."""
    ctl = secure_controller
    assert not await fleet_api.sync_revocations(ctl.app)  # nothing revoked: nothing pushed
    token = await token_for(ctl, "us-east")
    state = await asyncio.to_thread(enroll.enroll, ctl.base, token, tmp_path / "state")
    cfg = ProbeConfig(**enroll.config_overrides(state, tmp_path / "state"), heartbeat_interval=0.5)  # type: ignore[arg-type]
    agent = Agent(cfg)
    await agent.start()
    try:
        async with ctl.app[keys.POOL].acquire() as conn, conn.transaction():
            assert await store.revoke_probe(conn, state.probe_id) is not None
        assert not agent.refused.is_set()
        assert await fleet_api.sync_revocations(ctl.app)
        await asyncio.wait_for(agent.refused.wait(), 10)
        assert not await fleet_api.sync_revocations(ctl.app)
    finally:
        await agent.abort()
