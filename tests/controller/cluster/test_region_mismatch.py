"""A probe message whose body names another region than its subject is dropped and counted:
NATS lets a probe publish only on its own region's subjects, and the controller does not
believe a body that claims more."""

from __future__ import annotations

import time

import nats

from probefleet.controller import keys, metrics
from probefleet.shared import subjects, wire
from tests.controller.conftest import start_controller
from tests.helpers import eventually


def _heartbeat(probe_id: str, region: str) -> bytes:
    now = time.time()
    return wire.encode(
        wire.ProbeHeartbeat(
            probe_id=probe_id,
            region=region,
            version="0.1.0",
            concurrency=10,
            in_flight=0,
            started_at=now,
            sent_at=now,
        )
    )


async def test_a_heartbeat_claiming_another_region_is_dropped_and_counted(
    database: str, nats_url: str
) -> None:
    running = await start_controller(database, nats_url)
    nc = await nats.connect(nats_url)
    mismatches = metrics.REGION_MISMATCH.labels("heartbeat")
    before = mismatches._value.get()
    try:
        fleet = running.app[keys.FLEET]
        # eu-west's subject, a body that says us-east: us-east must not look served.
        await nc.publish(subjects.heartbeat("eu-west"), _heartbeat("liar", "us-east"))
        await nc.publish(subjects.heartbeat("eu-west"), _heartbeat("honest", "eu-west"))
        await eventually(lambda: "eu-west" in fleet.live_regions(), timeout=10, what="the honest probe seen")
        await eventually(
            lambda: mismatches._value.get() == before + 1, timeout=10, what="the mismatch counted"
        )
        assert "us-east" not in fleet.live_regions()
        assert [hb.probe_id for hb in fleet.live()] == ["honest"]
    finally:
        await nc.close()
        await running.stop()
