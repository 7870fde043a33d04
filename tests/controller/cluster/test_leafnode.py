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

from probefleet.controller.cluster.trust import leaf_config, server_config
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
    trust_dir = hub.trust_dir
    seed, public = natscreds.new_user_keypair()
    leaf_creds = tmp_path / "leaf" / "leaf.creds"
    natscreds.write_creds(leaf_creds, hub.trust.issue_leaf(public_key=public, name=REGION), seed)
    leaf = NatsServer(
        tmp_path / "leaf" / "nats",
        trust_conf=server_config(trust_dir, resolver_dir=tmp_path / "leaf" / "resolver"),
        tls=True,
        jetstream=False,
        extra_conf=leaf_config(
            trust_dir,
            hub_url=hub.server.leaf_url,
            credentials=leaf_creds,
            system_credentials=trust_dir / "system.creds",
            ca_file=hub.ca_file,
        ),
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

        [result] = await eventually(a_result, timeout=20, what="a result of the leaf's probe in the hub stream")
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
