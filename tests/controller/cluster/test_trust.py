"""The fleet's NATS trust against real nats-server processes in operator mode with TLS:
what a probe credential may do, what NATS refuses, revocation, restarts, generate()."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import nats
import pytest
from cryptography import x509
from nats.aio.client import Client

from probefleet.controller.cluster import trust
from probefleet.controller.cluster.trust import FleetTrust, TrustError
from probefleet.shared import natscreds, subjects
from probefleet.shared.streams import ensure_streams
from tests.fleet import SecureNats
from tests.helpers import eventually


class Errors:
    """An error_cb that keeps what the server said."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def cb(self, exc: Exception) -> None:
        self.seen.append(str(exc))

    def has(self, text: str) -> bool:
        return any(text in e for e in self.seen)


async def connect(nats_: SecureNats, creds: Path | None, **kw: object) -> Client:
    return await nats.connect(
        nats_.url, allow_reconnect=False, **natscreds.connect_options(creds, nats_.ca_file), **kw
    )  # type: ignore[arg-type]


async def probe_connection(
    nats_: SecureNats, tmp_path: Path, *, region: str, probe_id: str, **kw: object
) -> tuple[Client, str]:
    creds, public = nats_.probe_creds(tmp_path / f"{probe_id}.creds", region=region, probe_id=probe_id)
    nc = await nats.connect(
        nats_.url,
        allow_reconnect=False,
        **natscreds.connect_options(
            creds, nats_.ca_file, inbox_prefix=natscreds.probe_inbox_prefix(probe_id)
        ),
        **kw,  # type: ignore[arg-type]
    )
    return nc, public


async def test_it_lets_a_probe_take_its_own_jobs_and_publish_its_own_results(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    controller = await connect(secure_nats, secure_nats.controller_creds)
    await ensure_streams(controller.jetstream())
    probe, _ = await probe_connection(secure_nats, tmp_path, region="eu-west", probe_id="p-eu")
    try:
        jobs = await probe.subscribe(subjects.jobs("eu-west"), queue=subjects.jobs_queue("eu-west"))
        await probe.flush()
        await controller.publish(subjects.jobs("eu-west"), b"job-1")
        msg = await jobs.next_msg(timeout=5)
        assert msg.data == b"job-1"

        ack = await probe.jetstream().publish(subjects.results("eu-west"), b"result-1")
        assert ack.stream == subjects.RESULTS_STREAM
        stored = await controller.jetstream().get_msg(subjects.RESULTS_STREAM, ack.seq)
        assert stored.data == b"result-1" and stored.subject == subjects.results("eu-west")
        await probe.publish(subjects.heartbeat("eu-west"), b"hb")
        await probe.flush()
    finally:
        await probe.close()
        await controller.close()


async def test_nats_refuses_a_probe_other_regions_subjects(secure_nats: SecureNats, tmp_path: Path) -> None:
    errors = Errors()
    probe, _ = await probe_connection(
        secure_nats, tmp_path, region="eu-west", probe_id="p-eu", error_cb=errors.cb
    )
    try:
        await probe.subscribe(subjects.jobs("us-east"), queue=subjects.jobs_queue("us-east"))
        await probe.publish(subjects.results("us-east"), b"fake down")
        await probe.publish(subjects.heartbeat("us-east"), b"fake probe")
        # Its own jobs outside the queue group would copy every job of the region: refused too.
        await probe.subscribe(subjects.jobs("eu-west"))
        await probe.subscribe(subjects.results_all())
        await probe.flush()
        await eventually(
            lambda: (
                errors.has('permissions violation for subscription to "probefleet.jobs.us-east"')
                and errors.has('permissions violation for publish to "probefleet.results.us-east"')
                and errors.has('permissions violation for publish to "probefleet.probes.heartbeat.us-east"')
                and errors.has('permissions violation for subscription to "probefleet.jobs.eu-west"')
                and errors.has('permissions violation for subscription to "probefleet.results.>"')
            ),
            timeout=10,
            what="NATS refusing each foreign subject",
        )
        assert not errors.has('"probefleet.jobs.eu-west" using queue')
    finally:
        await probe.close()


async def test_a_probe_takes_its_own_regions_kind_subjects_only(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    """The kind subjects of a mixed region: a probe of eu-west may take eu-west's browser
    jobs in the region's queue group; another region's, or its own outside the group, never."""
    controller = await connect(secure_nats, secure_nats.controller_creds)
    errors = Errors()
    probe, _ = await probe_connection(
        secure_nats, tmp_path, region="eu-west", probe_id="p-eu", error_cb=errors.cb
    )
    try:
        own = await probe.subscribe(
            subjects.jobs_kind("eu-west", "browser"), queue=subjects.jobs_queue("eu-west")
        )
        await probe.subscribe(subjects.jobs_kind("us-east", "browser"), queue=subjects.jobs_queue("us-east"))
        await probe.subscribe(subjects.jobs_kind("eu-west", "browser"))
        await probe.flush()
        await controller.publish(subjects.jobs_kind("eu-west", "browser"), b"journey")
        assert (await own.next_msg(timeout=5)).data == b"journey"
        await eventually(
            lambda: (
                errors.has('permissions violation for subscription to "probefleet.jobs.us-east.browser"')
                and errors.has('permissions violation for subscription to "probefleet.jobs.eu-west.browser"')
            ),
            timeout=10,
            what="NATS refusing another region's kind subject and the plain subscription",
        )
        assert not errors.has('"probefleet.jobs.eu-west.browser" using queue')
    finally:
        await probe.close()
        await controller.close()


async def test_the_other_region_never_sees_a_refused_publish(secure_nats: SecureNats, tmp_path: Path) -> None:
    controller = await connect(secure_nats, secure_nats.controller_creds)
    await ensure_streams(controller.jetstream())
    watcher = await controller.subscribe(subjects.results("us-east"))
    errors = Errors()
    probe, _ = await probe_connection(
        secure_nats, tmp_path, region="eu-west", probe_id="p-eu", error_cb=errors.cb
    )
    try:
        # The stream never acknowledges: the server dropped the message and told the client.
        with pytest.raises(nats.errors.TimeoutError):
            await probe.jetstream().publish(subjects.results("us-east"), b"fake down", timeout=1)
        await eventually(
            lambda: errors.has('permissions violation for publish to "probefleet.results.us-east"'),
            timeout=10,
            what="the server's permissions violation",
        )
        # A message published after the refused one arrives; the refused one never did.
        await controller.publish(subjects.results("us-east"), b"marker")
        assert (await watcher.next_msg(timeout=5)).data == b"marker"
        info = await controller.jetstream().stream_info(subjects.RESULTS_STREAM)
        assert info.state.messages == 1  # only the controller's marker
    finally:
        await probe.close()
        await controller.close()


async def test_nats_refuses_a_connection_without_tls(secure_nats: SecureNats) -> None:
    port = secure_nats.server.port

    def talk_plain() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            info = s.recv(4096)
            assert json.loads(info.split(b" ", 1)[1])["tls_required"] is True
            with contextlib.suppress(ConnectionError):
                s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            answer = b""
            with contextlib.suppress(ConnectionError):
                while chunk := s.recv(4096):  # until the server closes
                    answer += chunk
            return answer

    # The server drops a client that speaks plain text where it waits for a TLS handshake.
    answer = await asyncio.to_thread(talk_plain)
    assert b"PONG" not in answer and b"+OK" not in answer


async def test_nats_refuses_a_connection_without_a_credential(secure_nats: SecureNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats, None)


async def test_nats_refuses_a_credential_of_another_fleet(secure_nats: SecureNats, tmp_path: Path) -> None:
    trust.generate(tmp_path / "other", hostnames=["localhost"])
    other = FleetTrust.load(tmp_path / "other", nats_urls=[secure_nats.url])
    seed, public = natscreds.new_user_keypair()
    jwt = other.issue_probe(public_key=public, probe_id="intruder", region="eu-west")
    natscreds.write_creds(tmp_path / "intruder.creds", jwt, seed)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats, tmp_path / "intruder.creds")


async def test_a_client_that_does_not_trust_the_ca_is_not_fooled(secure_nats: SecureNats) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(
            secure_nats.url,
            allow_reconnect=False,
            **natscreds.connect_options(secure_nats.controller_creds, None, url=secure_nats.url),
        )


async def test_push_revocations_closes_the_revoked_probe_within_10_s(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    closed: dict[str, float] = {}

    def on_closed(name: str):  # type: ignore[no-untyped-def]
        async def cb() -> None:
            closed[name] = time.monotonic()

        return cb

    revoked, revoked_key = await probe_connection(
        secure_nats, tmp_path, region="eu-west", probe_id="p-1", closed_cb=on_closed("p-1")
    )
    kept, _ = await probe_connection(
        secure_nats, tmp_path, region="eu-west", probe_id="p-2", closed_cb=on_closed("p-2")
    )
    try:
        pushed = time.monotonic()
        await secure_nats.trust.push_revocations({revoked_key: int(time.time())})
        await eventually(lambda: "p-1" in closed, timeout=10, what="the revoked probe's connection closed")
        assert closed["p-1"] - pushed < 10
        assert revoked.is_closed
        assert kept.is_connected and "p-2" not in closed
        await kept.flush(timeout=2)
        # The revoked credential cannot come back.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(secure_nats, tmp_path / "p-1.creds")
    finally:
        await kept.close()


async def test_the_revocation_list_is_the_whole_list_each_time(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    """Two pushes within one second both take effect (each carries a later iat), and a list
    without a key lifts its revocation: the caller's list is the truth, not a delta."""
    _, first = secure_nats.probe_creds(tmp_path / "a.creds", region="eu-west", probe_id="a")
    _, second = secure_nats.probe_creds(tmp_path / "b.creds", region="eu-west", probe_id="b")
    now = int(time.time())
    await secure_nats.trust.push_revocations({first: now})
    await secure_nats.trust.push_revocations({first: now, second: now})
    for name in ("a", "b"):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await connect(secure_nats, tmp_path / f"{name}.creds")
    await secure_nats.trust.push_revocations({first: now})
    nc = await connect(secure_nats, tmp_path / "b.creds")
    await nc.close()


async def test_a_controller_restart_keeps_probe_credentials_valid(
    secure_nats: SecureNats, tmp_path: Path
) -> None:
    creds, public = secure_nats.probe_creds(tmp_path / "old.creds", region="eu-west", probe_id="old")
    # A new controller process: everything it knows comes from the trust directory.
    restarted = FleetTrust.load(secure_nats.trust_dir, nats_urls=[secure_nats.url])
    nc = await connect(secure_nats, creds)
    await nc.close()
    seed, new_public = natscreds.new_user_keypair()
    jwt = restarted.issue_probe(public_key=new_public, probe_id="new", region="eu-west")
    natscreds.write_creds(tmp_path / "new.creds", jwt, seed)
    nc = await connect(secure_nats, tmp_path / "new.creds")
    await nc.close()
    await restarted.push_revocations({public: int(time.time())})
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats, creds)


async def test_a_restarted_nats_server_keeps_the_revocations(secure_nats: SecureNats, tmp_path: Path) -> None:
    creds, public = secure_nats.probe_creds(tmp_path / "p.creds", region="eu-west", probe_id="p")
    await secure_nats.trust.push_revocations({public: int(time.time())})
    secure_nats.server.stop()
    secure_nats.server.start()
    secure_nats.trust.connect_url = secure_nats.url
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats, creds)


def test_issue_probe_refuses_what_is_not_a_user_key(secure_nats: SecureNats) -> None:
    account_key = secure_nats.trust.account_public_key
    for bad in ["", "U123", account_key, "U" + "A" * 55]:
        with pytest.raises(ValueError, match="public_key"):
            secure_nats.trust.issue_probe(public_key=bad, probe_id="p", region="eu-west")
    _, public = natscreds.new_user_keypair()
    with pytest.raises(ValueError, match="region"):
        secure_nats.trust.issue_probe(public_key=public, probe_id="p", region="eu.west")


def test_generate_makes_the_trust_once_and_keeps_it(tmp_path: Path) -> None:
    trust_dir = tmp_path / "trust"
    trust.generate(trust_dir, hostnames=["nats.example.com"])
    files = {p.name: p.read_bytes() for p in trust_dir.iterdir() if p.is_file()}
    for name in [
        "operator.nk",
        "system.nk",
        "system.creds",
        "account.nk",
        "account-signing.nk",
        "controller.creds",
        "ca-key.pem",
        "server-key.pem",
    ]:
        assert stat.S_IMODE((trust_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(trust_dir.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(files["server-cert.pem"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"nats.example.com", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(a) for a in names.get_values_for_type(x509.IPAddress)}

    trust.generate(trust_dir, hostnames=["nats.example.com"])
    assert {p.name: p.read_bytes() for p in trust_dir.iterdir() if p.is_file()} == files

    # A new host name: a new server certificate from the same CA, every key kept.
    trust.generate(trust_dir, hostnames=["nats.example.com", "hub.example.org"])
    again = {p.name: p.read_bytes() for p in trust_dir.iterdir() if p.is_file()}
    changed = {name for name in files if again[name] != files[name]}
    assert changed == {"server-cert.pem", "server-key.pem"}
    reissued = x509.load_pem_x509_certificate(again["server-cert.pem"])
    assert reissued.issuer == cert.issuer
    names = reissued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hub.example.org" in names.get_values_for_type(x509.DNSName)


def test_load_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="init-fleet"):
        FleetTrust.load(tmp_path / "none", nats_urls=["tls://127.0.0.1:4222"])
    trust.generate(tmp_path / "t")
    (tmp_path / "t" / "account-signing.nk").unlink()
    with pytest.raises(TrustError, match=r"account-signing\.nk is missing"):
        FleetTrust.load(tmp_path / "t", nats_urls=["tls://127.0.0.1:4222"])


def test_init_fleet_makes_the_trust_and_the_printed_nats_command_runs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from probefleet.controller.cli import controller
    from probefleet.shared.devstack import nats_server_binary

    trust_dir = tmp_path / "fleet"
    result = CliRunner().invoke(
        controller, ["init-fleet", "--dir", str(trust_dir), "--hostname", "nats.example.com"]
    )
    assert result.exit_code == 0, result.output
    assert f"PROBEFLEET_FLEET_TRUST_DIR={trust_dir}" in result.output
    assert "PROBEFLEET_NATS_URL=tls://nats.example.com:4222" in result.output
    [line] = [x.strip() for x in result.output.splitlines() if x.strip().startswith("nats-server -c ")]
    argv = line.split()
    argv[argv.index("-p") + 1] = "-1"
    argv[argv.index("-sd") + 1] = str(tmp_path / "js")
    argv[0] = nats_server_binary()
    ports = tmp_path / "ports"
    ports.mkdir()
    proc = subprocess.Popen(
        [*argv, "-a", "127.0.0.1", "--ports_file_dir", str(ports)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not list(ports.glob("*.ports")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert json.loads(next(ports.glob("*.ports")).read_text())["nats"][0].startswith("tls://")
    finally:
        proc.terminate()
        proc.wait(10)
    again = CliRunner().invoke(controller, ["init-fleet", "--dir", str(trust_dir)])
    assert again.exit_code == 0 and (trust_dir / "operator.nk").exists()


async def test_a_controller_runs_on_the_secure_nats_with_the_trust(
    database: str, secure_nats: SecureNats
) -> None:
    from probefleet.controller import keys
    from tests.controller.conftest import start_controller

    running = await start_controller(database, secure_nats.url, fleet_trust_dir=str(secure_nats.trust_dir))
    try:
        trust_held = running.app[keys.TRUST]
        assert (
            trust_held is not None and trust_held.account_public_key == secure_nats.trust.account_public_key
        )
        nc = running.app[keys.NC]
        assert nc.is_connected
        info = await running.app[keys.JS].stream_info(subjects.RESULTS_STREAM)
        assert info.config.name == subjects.RESULTS_STREAM
    finally:
        await running.stop()


async def test_a_controller_nats_refuses_stops_at_once_saying_why(
    database: str, secure_nats: SecureNats, tmp_path: Path
) -> None:
    from probefleet.shared.natscreds import NatsRefusedError
    from tests.controller.conftest import start_controller

    trust.generate(tmp_path / "other")
    async with asyncio.timeout(20):
        with pytest.raises(NatsRefusedError, match=r"refused the controller: .*Authorization Violation"):
            await start_controller(
                database,
                secure_nats.url,
                nats_credentials=str(tmp_path / "other" / "controller.creds"),
                nats_tls_ca=str(secure_nats.ca_file),
            )


async def test_mutual_tls_needs_a_client_certificate_from_the_fleet_ca(tmp_path: Path) -> None:
    """init-fleet --mutual-tls: a client with a credential but no certificate is refused at the
    TLS handshake; one with a certificate from `client-cert` connects; the controller's own
    (made with the trust) serves push_revocations; and it stays on when generate runs again."""
    from click.testing import CliRunner

    from probefleet.controller.cli import controller
    from tests.fleet import start_secure_nats

    trust_dir = tmp_path / "secure" / "trust"
    trust.generate(trust_dir, hostnames=["localhost"], mutual_tls=True)
    secure = start_secure_nats(tmp_path / "secure", verify_clients=True)
    try:
        creds, public = secure.probe_creds(tmp_path / "p.creds", region="eu-west", probe_id="p")
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(
                secure.url, allow_reconnect=False, **natscreds.connect_options(creds, secure.ca_file)
            )
        done = CliRunner().invoke(
            controller,
            ["client-cert", "--dir", str(trust_dir), "--name", "p", "--out", str(tmp_path / "certs")],
        )
        assert done.exit_code == 0, done.output
        cert, key = tmp_path / "certs" / "p-cert.pem", tmp_path / "certs" / "p-key.pem"
        assert f"PROBEFLEET_NATS_TLS_CERT={cert}" in done.output and key.stat().st_mode & 0o777 == 0o600
        nc = await nats.connect(
            secure.url,
            allow_reconnect=False,
            **natscreds.connect_options(creds, secure.ca_file, cert_file=cert, key_file=key),
        )
        assert secure.trust.tls_cert == trust_dir / "controller-cert.pem"
        await secure.trust.push_revocations({public: int(time.time())})
        await eventually(lambda: nc.is_closed, timeout=10, what="the revoked probe cut off")
    finally:
        secure.server.stop()
    trust.generate(trust_dir, hostnames=["localhost"])
    assert "verify: true" in (trust_dir / "nats-server.conf").read_text()
