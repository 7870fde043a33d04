"""A probe message whose body names another region than its subject is dropped and counted:
NATS lets a probe publish only on its own region's subjects, and the controller does not
believe a body that claims more."""

from __future__ import annotations

import time

import nats
from nats.aio.msg import Msg

from probefleet.controller import keys, metrics
from probefleet.shared import subjects, wire
from tests.controller.conftest import Running, start_controller
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


def _result(monitor_id: int, region: str, probe_id: str) -> bytes:
    now = time.time()
    return wire.encode(
        wire.CheckResult(
            monitor_id=monitor_id,
            due=now - 1,
            region=region,
            probe_id=probe_id,
            status=wire.Status.FAIL,
            reason=wire.Reason.TIMEOUT,
            started_at=now - 1,
        )
    )


async def test_a_result_claiming_another_region_is_terminated_and_counted(
    database: str, nats_url: str
) -> None:
    running = await start_controller(database, nats_url)
    nc = await nats.connect(nats_url)
    mismatches = metrics.REGION_MISMATCH.labels("result")
    before = mismatches._value.get()
    pool = running.app[keys.POOL]
    try:
        monitor_id = await pool.fetchval(
            "INSERT INTO monitors (name, kind, spec, interval_s, timeout_s, locations, enabled)"
            " VALUES ('m', 'tcp', '{}', 60, 5, ARRAY['us-east'], false) RETURNING id"
        )
        js = nc.jetstream()
        # eu-west's subject, a body that fakes a failure in us-east; then an honest one.
        await js.publish(subjects.results("eu-west"), _result(monitor_id, "us-east", "liar"))
        await js.publish(subjects.results("us-east"), _result(monitor_id, "us-east", "honest"))

        async def stored() -> list[str] | None:
            rows = await pool.fetch("SELECT probe_id FROM check_results WHERE monitor_id = $1", monitor_id)
            return [r["probe_id"] for r in rows] or None

        assert await eventually(stored, timeout=10, what="the honest result stored") == ["honest"]
        assert mismatches._value.get() == before + 1
        # Terminated, not left to be redelivered: nothing is pending on the consumer.
        info = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
        assert info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()
        await running.stop()


async def test_check_now_takes_no_answer_for_a_region_from_another_regions_subject(
    controller: Running, nats_url: str
) -> None:
    """A 'check now' hears results on the core subjects: a body for us-east arriving on
    eu-west's subject (all an eu-west credential may publish on) is not us-east's answer."""
    from probefleet.controller.cluster.fleet import Fleet
    from probefleet.controller.engine import consensus, ondemand

    fleet = Fleet(interval=60)
    now = time.time()
    for region in ("us-east", "eu-west"):
        fleet.observe(
            wire.ProbeHeartbeat(
                probe_id=f"idle-{region}",
                region=region,
                version="x",
                concurrency=1,
                in_flight=0,
                started_at=now,
                sent_at=now,
            )
        )
    liar = await nats.connect(nats_url)

    async def forge(msg: Msg) -> None:
        job = wire.decode_job(msg.data)
        forged = wire.CheckResult(
            monitor_id=job.monitor_id,
            due=job.due,
            region="us-east",
            attempt=job.attempt,
            probe_id="liar",
            status=wire.Status.FAIL,
            reason=wire.Reason.TIMEOUT,
            started_at=time.time(),
        )
        await liar.publish(subjects.results("eu-west"), wire.encode(forged))

    await liar.subscribe(subjects.jobs("us-east"), cb=forge)
    await liar.flush()
    try:
        out = await ondemand.run(
            controller.app[keys.NC],
            fleet,
            monitor_id=1,
            spec=wire.HttpSpec(url="http://127.0.0.1:9/"),
            check_timeout=0.5,
            locations=["us-east", "eu-west"],
            rule=consensus.Rule(mode="any"),
            grace=0.5,
        )
        status = {r["region"]: r["status"] for r in out["regions"]}
        assert status == {"us-east": "no_answer", "eu-west": "no_answer"}
    finally:
        await liar.close()
