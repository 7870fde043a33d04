"""A probe on the fleet's secure NATS (operator mode, TLS, its own credential): it works with
its credential, and when NATS refuses it for good it says why once and stops, in process and
as `probefleet probe run`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client

from probefleet.controller.cluster import trust
from probefleet.probe.agent import EXIT_REFUSED, Agent, NatsRefusedError
from probefleet.shared import natscreds, subjects, wire
from probefleet.shared.streams import ensure_streams
from probefleet.shared.wire import CheckJob, HttpSpec, Status
from tests.fleet import SecureNats
from tests.helpers import eventually

REGION = "eu-west"
CLI = [sys.executable, "-m", "probefleet.shared.cli", "probe", "run"]


@pytest.fixture
async def controller_nc(secure_nats: SecureNats) -> AsyncIterator[Client]:
    nc = await nats.connect(
        secure_nats.url, **natscreds.connect_options(secure_nats.controller_creds, secure_nats.ca_file)
    )
    await ensure_streams(nc.jetstream(), max_bytes=64 << 20)
    yield nc
    await nc.close()


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


def job(url: str) -> CheckJob:
    now = time.time()
    return CheckJob(
        monitor_id=7, due=now, deadline=now + 10, region=REGION, timeout=2.0, spec=HttpSpec(url=url)
    )


async def test_a_probe_with_its_credential_takes_jobs_and_its_results_reach_the_stream(
    secure_nats: SecureNats, controller_nc: Client, target: str, tmp_path: Path
) -> None:
    creds, _ = secure_nats.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-1")
    agent = Agent(secure_nats.probe_config(creds, region=REGION, probe_id="p-1"))
    heartbeats = await controller_nc.subscribe(subjects.heartbeat(REGION))
    await agent.start()
    try:
        js = controller_nc.jetstream()
        sub = await js.pull_subscribe(subjects.results_all(), durable=None)

        async def one_result() -> list[wire.CheckResult]:
            # A job is published each try: core NATS drops one that no probe takes.
            await controller_nc.publish(subjects.jobs(REGION), wire.encode(job(target)))
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                return []
            return [wire.decode_result(m.data) for m in msgs]

        [result, *_] = await eventually(one_result, timeout=20, what="the probe's result in the stream")
        assert result.status == Status.OK and result.probe_id == "p-1" and result.region == REGION
        hb = await heartbeats.next_msg(timeout=5)
        assert b"p-1" in hb.data
        assert not agent.refused.is_set()
    finally:
        await agent.stop()


async def test_a_revoked_probe_is_refused_and_says_so(
    secure_nats: SecureNats, controller_nc: Client, tmp_path: Path
) -> None:
    creds, public = secure_nats.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-1")
    agent = Agent(secure_nats.probe_config(creds, region=REGION, probe_id="p-1"))
    await agent.start()
    try:
        await secure_nats.trust.push_revocations({public: int(time.time())})
        await eventually(agent.refused.is_set, timeout=10, what="the probe refused after its revocation")
        assert "revoked" in agent.refused_reason or "refuses this probe's credential" in agent.refused_reason
    finally:
        await agent.abort()


async def test_a_probe_with_a_foreign_credential_does_not_retry_forever(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    trust.generate(tmp_path / "other")
    other = trust.FleetTrust.load(tmp_path / "other", nats_urls=[secure_nats.url])
    seed, public = natscreds.new_user_keypair()
    natscreds.write_creds(
        tmp_path / "x.creds", other.issue_probe(public_key=public, probe_id="x", region=REGION), seed
    )
    agent = Agent(secure_nats.probe_config(tmp_path / "x.creds", region=REGION, probe_id="x"))
    try:
        async with asyncio.timeout(10):
            with pytest.raises(NatsRefusedError, match="authorization violation"):
                await agent.start()
    finally:
        await agent.abort()


async def test_a_probe_that_does_not_trust_the_server_certificate_stops(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    creds, _ = secure_nats.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-1")
    trust.generate(tmp_path / "other")
    cfg = secure_nats.probe_config(creds, region=REGION, probe_id="p-1")
    cfg.nats_tls_ca = str(tmp_path / "other" / "ca.pem")
    agent = Agent(cfg)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(NatsRefusedError, match=r"not trusted.*PROBEFLEET_NATS_TLS_CA"):
                await agent.start()
    finally:
        await agent.abort()


async def _stderr_until(proc: asyncio.subprocess.Process, text: str, lines: list[str]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        lines.append(line.decode())
        if text in lines[-1]:
            return
    raise AssertionError(f"{text!r} never logged: {''.join(lines)}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBEFLEET_")}
    return env | extra


async def test_probe_run_exits_78_with_one_line_when_revoked(
    secure_nats: SecureNats, controller_nc: Client, tmp_path: Path
) -> None:
    creds, public = secure_nats.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-cli")
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        env=_env(
            PROBEFLEET_REGION=REGION,
            PROBEFLEET_PROBE_ID="p-cli",
            PROBEFLEET_NATS_URL=secure_nats.url,
            PROBEFLEET_NATS_CREDENTIALS=str(creds),
            PROBEFLEET_NATS_TLS_CA=str(secure_nats.ca_file),
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            await _stderr_until(proc, "probe started", lines)
        assert not any("insecure" in line for line in lines)
        await secure_nats.trust.push_revocations({public: int(time.time())})
        async with asyncio.timeout(10):
            rest = (await proc.communicate())[1].decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == EXIT_REFUSED == 78, rest
    stopped = [line for line in rest.splitlines() if "probe stopped" in line]
    assert len(stopped) == 1 and "ERROR" in stopped[0] and "p-cli" in stopped[0]
    assert "revoked" in stopped[0] or "refuses this probe's credential" in stopped[0]
    assert "Traceback" not in rest
    assert rest.count("nats refused the connection") <= 2  # no retry storm


async def test_probe_run_refuses_to_start_without_a_credential(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--region", REGION, env=_env(), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "no NATS credential" in err.decode() and "--insecure-nats" in err.decode()


async def test_probe_run_warns_at_every_start_in_insecure_mode(nats_url: str) -> None:
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "--region",
            REGION,
            "--insecure-nats",
            env=_env(PROBEFLEET_NATS_URL=nats_url),
            stderr=asyncio.subprocess.PIPE,
        )
        lines: list[str] = []
        try:
            async with asyncio.timeout(20):
                await _stderr_until(proc, "probe started", lines)
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        warning = [line for line in lines if "insecure NATS" in line]
        assert len(warning) == 1 and "WARNING" in warning[0]
        assert proc.returncode == 0


async def test_a_tls_disconnect_logs_no_asyncio_noise(
    secure_nats: SecureNats, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    creds, _ = secure_nats.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-1")
    agent = Agent(secure_nats.probe_config(creds, region=REGION, probe_id="p-1"))
    await agent.start()
    with caplog.at_level("WARNING", logger="asyncio"):
        secure_nats.server.stop()  # the server goes: every client sees its TLS connection end
        await eventually(lambda: agent.nc is not None and not agent.nc.is_connected, timeout=10)
        secure_nats.server.start()
        await agent.abort()
    assert "nats disconnected" in caplog.text
    assert "eof_received" not in caplog.text


async def test_a_probe_shows_its_client_certificate_under_mutual_tls(tmp_path: Path) -> None:
    from tests.fleet import start_secure_nats

    trust.generate(tmp_path / "m" / "trust", hostnames=["localhost"], mutual_tls=True)
    secure = start_secure_nats(tmp_path / "m", verify_clients=True)
    try:
        creds, _ = secure.probe_creds(tmp_path / "p.creds", region=REGION, probe_id="p-m")
        cert, key = trust.issue_client_cert(secure.trust_dir, "p-m", tmp_path / "certs")
        agent = Agent(
            secure.probe_config(
                creds, region=REGION, probe_id="p-m", nats_tls_cert=str(cert), nats_tls_key=str(key)
            )
        )
        async with asyncio.timeout(10):
            await agent.start()
        assert agent.nc is not None and agent.nc.is_connected
        await agent.stop()
    finally:
        secure.server.stop()
