"""The production topology: a three-node NATS cluster whose JetStream streams keep three
replicas (nats_stream_replicas = 3). One node is killed with SIGKILL under load, the one
that leads the results stream, and comes back later; a target's outage while the cluster
is down a node is still seen within two intervals."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from probefleet.shared import subjects
from tests.chaos.harness import STEADY, Stack, pick, wait

pytestmark = pytest.mark.timeout(pick(900, 180))


async def test_it_loses_one_nats_node_of_three(cluster_stack: Stack) -> None:
    stack = cluster_stack
    assert stack.nats_cluster is not None
    nc = await nats.connect(stack.nats_cluster.urls[1:])
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.RESULTS_STREAM)
        assert info.config.num_replicas == 3
        # The worst node to lose: the leader of the results stream (a new one is elected
        # while the probes retry their publishes).
        assert info.cluster is not None and info.cluster.leader
        node = next(n for n in stack.nats_cluster.nodes if n.name == info.cluster.leader)
        since = killed = time.time()
        node.kill()
        await asyncio.sleep(2.0)
        outage = await stack.outage("flip-2", 4.0)
        await asyncio.sleep(pick(30.0, 1.0))
        node.start()
        await stack.nats_cluster.ready()

        async def replicas_current() -> bool:
            try:
                info = await js.stream_info(subjects.RESULTS_STREAM)
            except nats.errors.Error:
                # This test's own connection may be moving off a node or the stream's
                # leader may be in an election: ask again, within the bound.
                return False
            replicas = info.cluster.replicas if info.cluster else None
            return bool(replicas) and len(replicas) == 2 and all(r.current for r in replicas)

        await wait(replicas_current, 60, "the restarted node's replica current again")
        await stack.rounds_decided_after(time.time() + 1, STEADY)
        # Jobs are core NATS: those published while the clients move to another node reach no
        # probe, and their rounds are unknown (never down).
        await stack.check(
            "NATS cluster of three, one node killed",
            since,
            outages={"flip-2": outage},
            unknown_windows=[(killed - 1.0, killed + 3.0)],
            extra={"node_killed": f"{node.name}, leader of the results stream"},
        )
    finally:
        await nc.close()
