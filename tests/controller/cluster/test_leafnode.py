"""A remote region behind a NATS leaf node: a hub (JetStream, the controller's side) and a
leaf server in the region (no JetStream), both real nats-server processes in operator mode
with TLS. A probe connects to the leaf with its own credential, takes a job published at
the hub, and its result reaches the hub's stream; a revocation pushed at the hub cuts it
off at the leaf."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from probefleet.controller.cluster.trust import write_leaf
from probefleet.probe.agent import Agent
from probefleet.shared import natscreds, subjects, wire
from probefleet.shared.devstack import NatsServer
from probefleet.shared.streams import ensure_streams
from probefleet.shared.wire import CheckJob, Status, TcpSpec
from tests.fleet import SecureNats, start_secure_nats
from tests.helpers import eventually

REGION = "eu-central"


@dataclass
class Topology:
    hub: SecureNats
    leaf: NatsServer


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    hub = start_secure_nats(tmp_path / "hub", leafnodes=True)
    # What `probefleet controller init-leaf` writes, used where it was written.
    files = tmp_path / "leaf" / "fleet"
    write_leaf(
        hub.trust,
        files,
        name=REGION,
        hub_url=hub.server.leaf_url,
        files_at=files,
        resolver_dir=tmp_path / "leaf" / "resolver",
    )
    leaf = NatsServer(
        tmp_path / "leaf" / "nats", trust_conf=(files / "leaf.conf").read_text(), tls=True, jetstream=False
    )
    try:
        leaf.start()
        yield Topology(hub, leaf)
    finally:
        leaf.stop()
        hub.server.stop()


async def test_a_probe_behind_a_leaf_node_takes_hub_jobs_and_its_results_reach_the_hub_stream(
    topology: Topology, tmp_path: Path
) -> None:
    hub = topology.hub
    controller = await nats.connect(hub.url, **natscreds.connect_options(hub.controller_creds, hub.ca_file))
    js = controller.jetstream()
    await ensure_streams(js, max_bytes=64 << 20)
    creds, public = hub.probe_creds(tmp_path / "probe.creds", region=REGION, probe_id="leaf-probe")
    cfg = hub.probe_config(creds, region=REGION, probe_id="leaf-probe")
    cfg.nats_url = topology.leaf.url
    agent = Agent(cfg)
    try:
        await agent.start()
        # The probe's queue subscription crosses the leaf connection to the hub.
        sub = await js.pull_subscribe(subjects.results(REGION), durable=None)
        closed_tcp_port = 1  # nothing listens: a fast, local "connection refused" result

        async def a_result() -> list[wire.CheckResult]:
            now = time.time()
            job = CheckJob(
                monitor_id=1,
                due=now,
                deadline=now + 10,
                region=REGION,
                timeout=2,
                spec=TcpSpec(host="127.0.0.1", port=closed_tcp_port),
            )
            await controller.publish(subjects.jobs(REGION), wire.encode(job))
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                return []
            return [wire.decode_result(m.data) for m in msgs]

        [result] = await eventually(
            a_result, timeout=20, what="a result of the leaf's probe in the hub stream"
        )
        assert result.probe_id == "leaf-probe" and result.region == REGION
        assert result.status == Status.FAIL  # the target refused: a real check ran behind the leaf

        # The probe's credential is checked at the leaf: another region is refused there.
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            topology.leaf.url,
            error_cb=on_error,
            **natscreds.connect_options(
                creds, hub.ca_file, inbox_prefix=natscreds.probe_inbox_prefix("leaf-probe")
            ),
        )
        await nc.publish(subjects.results("us-east"), b"fake")
        await nc.flush()
        await eventually(
            lambda: any('publish to "probefleet.results.us-east"' in e for e in errors),
            timeout=10,
            what="the leaf refusing another region's subject",
        )
        await nc.close()

        # A revocation pushed at the hub reaches the leaf over the system account.
        await hub.trust.push_revocations({public: int(time.time())})
        await eventually(agent.refused.is_set, timeout=10, what="the probe behind the leaf cut off")
    finally:
        await agent.abort()
        await controller.close()


def test_init_fleet_and_init_leaf_write_the_hub_and_leaf_files(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from probefleet.controller.cli import controller

    trust_dir = tmp_path / "fleet"
    done = CliRunner().invoke(
        controller,
        [
            "init-fleet",
            "--dir",
            str(trust_dir),
            "--hostname",
            "nats.example.com",
            "--leafnodes",
            "0.0.0.0:7422",
        ],
    )
    assert done.exit_code == 0, done.output
    hub_conf = (trust_dir / "nats-server.conf").read_text()
    assert 'leafnodes {\n  listen: "0.0.0.0:7422"\n  tls {' in hub_conf

    out = tmp_path / "leaf"
    args = ["init-leaf", "--dir", str(trust_dir), "--region", REGION, "--out", str(out)]
    refused = CliRunner().invoke(controller, [*args, "--hub-url", "nats://nats.example.com:7422"])
    assert refused.exit_code == 2 and "tls://" in refused.output
    done = CliRunner().invoke(controller, [*args, "--hub-url", "tls://nats.example.com:7422"])
    assert done.exit_code == 0, done.output
    assert "nats-server -c /etc/nats/fleet/leaf.conf" in done.output
    assert {p.name for p in out.iterdir()} == {
        "leaf.conf",
        "leaf.creds",
        "system.creds",
        "ca.pem",
        "server-cert.pem",
        "server-key.pem",
    }
    for secret in ("leaf.creds", "system.creds", "server-key.pem"):
        assert (out / secret).stat().st_mode & 0o777 == 0o600
    leaf_conf = (out / "leaf.conf").read_text()
    assert '"/etc/nats/fleet/leaf.creds"' in leaf_conf and '"/etc/nats/fleet/server-cert.pem"' in leaf_conf
    assert leaf_conf.count('url: "tls://nats.example.com:7422"') == 2
    assert "operator.nk" not in " ".join(p.name for p in out.iterdir()), (
        "no signing key leaves the controllers"
    )
