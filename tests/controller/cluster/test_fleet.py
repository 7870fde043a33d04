"""Live probes per region: joined on a heartbeat, forgotten after missed heartbeats; the
kinds a region can run, outdated versions, and the results flow per region."""

from __future__ import annotations

import pytest

from probefleet.controller.cluster.fleet import (
    CONTROLLER_PROBE_ID,
    Fleet,
    ResultFlow,
    job_route,
    no_capable_probe,
    outdated,
)
from probefleet.shared.wire import (
    CheckJob,
    CheckResult,
    IcmpSpec,
    ProbeHeartbeat,
    Reason,
    RedisSpec,
    SshSpec,
    Status,
    TcpSpec,
)


def hb(
    probe_id: str,
    region: str,
    at: float,
    capabilities: list[str] | None = None,
    version: str = "t",
    job_batches: bool = False,
    kind_subjects: list[str] | None = None,
) -> ProbeHeartbeat:
    return ProbeHeartbeat(
        probe_id=probe_id,
        region=region,
        version=version,
        concurrency=10,
        in_flight=0,
        started_at=0.0,
        sent_at=at,
        capabilities=capabilities or [],
        job_batches=job_batches,
        kind_subjects=kind_subjects or [],
    )


def test_it_counts_live_probes_per_region_and_forgets_silent_ones() -> None:
    fleet = Fleet(interval=2.0, missed=3)
    assert fleet.observe(hb("a", "eu-west", 100), now=100) is True
    assert fleet.observe(hb("a", "eu-west", 102), now=102) is False
    fleet.observe(hb("b", "eu-west", 103), now=103)
    fleet.observe(hb("c", "us-east", 103), now=103)
    assert fleet.live_regions(now=104) == {"eu-west": 2, "us-east": 1}
    # a last spoke at 102: with three missed 2 s heartbeats it is gone after 108.
    assert fleet.live_regions(now=108.5) == {"eu-west": 1, "us-east": 1}
    gone = fleet.prune(now=109.5)
    assert sorted(p.probe_id for p in gone) == ["a", "b", "c"]
    assert fleet.live_regions(now=109.5) == {}


def test_while_our_own_nats_connection_is_down_the_fleet_keeps_its_view() -> None:
    """Blind, not empty: no probe ages out from the disconnect until a window (3 x 2 s)
    after the reconnect; then those not heard again are forgotten."""
    fleet = Fleet(interval=2.0, missed=3)
    fleet.observe(hb("a", "eu-west", 100), now=100)
    fleet.observe(hb("b", "us-east", 100), now=100)
    fleet.observe(hb("gone", "ap-south", 90), now=90)  # already silent past the window at 100
    fleet.disconnected(now=100)
    assert fleet.blind(now=130)
    assert fleet.live_regions(now=130) == {"eu-west": 1, "us-east": 1}
    assert fleet.prune(now=130) and fleet.live_regions(now=130) == {"eu-west": 1, "us-east": 1}
    fleet.disconnected(now=131)  # told again (a failed reconnect): the view is still 100's
    fleet.reconnected(now=140)
    assert fleet.observe(hb("a", "eu-west", 141), now=141) is False  # not a comeback
    assert fleet.live_regions(now=145.9) == {"eu-west": 1, "us-east": 1}
    assert not fleet.blind(now=146.1)
    # b was not heard within the window after the reconnect: now it is gone for real.
    assert fleet.live_regions(now=146.1) == {"eu-west": 1}
    assert [p.probe_id for p in fleet.prune(now=146.1)] == ["b"]
    # A later outage starts from the view of its own disconnect.
    fleet.observe(hb("a", "eu-west", 148), now=148)
    fleet.disconnected(now=150)
    fleet.reconnected(now=151)
    assert fleet.live_regions(now=155) == {"eu-west": 1}
    assert fleet.live_regions(now=157.1) == {}


def test_rounds_are_settled_up_to_what_every_live_probe_may_still_hold() -> None:
    """The earliest, over the live probes, of the last heartbeat's arrival and the oldest
    due time it still held; a forgotten probe holds nothing back."""
    fleet = Fleet(interval=2.0, missed=3)
    assert fleet.settled_until(now=100) is None  # no probe: nothing can be held
    fleet.observe(hb("a", "eu-west", 100), now=100)
    fleet.observe(hb("b", "us-east", 101), now=101)
    assert fleet.settled_until(now=101) == 100
    retrying = hb("b", "us-east", 103)
    retrying.unacked_since = 95.5  # a result due at 95.5 not acknowledged yet
    fleet.observe(retrying, now=103)
    fleet.observe(hb("a", "eu-west", 103), now=103)
    assert fleet.settled_until(now=103) == 95.5
    fleet.observe(hb("b", "us-east", 104), now=104)  # acknowledged since
    assert fleet.settled_until(now=104) == 103
    # a falls silent: it holds the point back until it is forgotten (3 x 2 s after 103).
    assert fleet.settled_until(now=108.9) == 103
    fleet.observe(hb("b", "us-east", 109), now=109)
    assert fleet.settled_until(now=109.1) == 109


def test_a_region_takes_job_batches_only_when_every_live_probe_says_so() -> None:
    fleet = Fleet(interval=2.0, missed=3)
    fleet.observe(hb("a", "eu-west", 100, job_batches=True), now=100)
    fleet.observe(hb("b", "eu-west", 100, job_batches=True), now=100)
    fleet.observe(hb("c", "us-east", 100, job_batches=True), now=100)
    fleet.observe(hb("old", "us-east", 100), now=100)  # a probe of the previous version
    fleet.observe(hb("d", "ap-south", 100), now=100)
    assert fleet.batching(now=101) == {"eu-west": 2}
    # The old probe silent past the window: us-east's remaining probe takes batches.
    fleet.observe(hb("c", "us-east", 105, job_batches=True), now=105)
    assert fleet.batching(now=107) == {"us-east": 1}


def test_a_mixed_regions_kind_goes_on_its_kind_subject_while_every_able_probe_takes_it_there() -> None:
    fleet = Fleet(interval=1.0, missed=2)
    fleet.observe(hb("a", "eu-west", 0, ["http", "ssh", "redis"], kind_subjects=["redis", "ssh"]), now=0)
    fleet.observe(hb("b", "eu-west", 0, ["http", "ssh", "redis"], kind_subjects=["redis", "ssh"]), now=0)
    fleet.observe(hb("c", "eu-west", 0, ["http", "ssh"], kind_subjects=["ssh"]), now=0)
    # Every us-east probe runs ssh: the region subject serves.
    fleet.observe(hb("d", "us-east", 0, ["http", "ssh"], kind_subjects=["ssh"]), now=0)
    assert fleet.kind_routes(now=1) == {"eu-west": {"redis": 2}}

    def job(region: str, spec: object) -> CheckJob:
        return CheckJob(monitor_id=1, due=1, deadline=5, region=region, timeout=2, spec=spec)  # type: ignore[arg-type]

    routes = fleet.kind_routes(now=1)
    redis = RedisSpec(host="127.0.0.1")
    assert job_route(job("eu-west", redis), routes) == ("probefleet.jobs.eu-west.redis", 2)
    assert job_route(job("eu-west", SshSpec(host="h")), routes) == ("probefleet.jobs.eu-west", None)
    assert job_route(job("us-east", redis), routes) == ("probefleet.jobs.us-east", None)
    # An able probe that does not take redis on its kind subject (an older version, or a
    # credential from before kind subjects): redis back to the region subject; e cannot run
    # ssh, so ssh goes to the three that can.
    fleet.observe(hb("e", "eu-west", 0, ["http", "redis"]), now=0)
    assert fleet.kind_routes(now=1) == {"eu-west": {"ssh": 3}}
    # It stops; an incapable older probe (no capabilities: the legacy kinds) keeps the
    # region mixed for redis.
    fleet.observe(hb("a", "eu-west", 5, ["http", "ssh", "redis"], kind_subjects=["redis", "ssh"]), now=5)
    fleet.observe(hb("old", "eu-west", 5), now=5)
    assert fleet.kind_routes(now=5) == {"eu-west": {"redis": 1, "ssh": 1}}


def test_a_probe_that_comes_back_is_new_again() -> None:
    fleet = Fleet(interval=1.0, missed=2)
    fleet.observe(hb("a", "ap-south", 0), now=0)
    assert fleet.observe(hb("a", "ap-south", 10), now=10) is True


def test_a_region_runs_the_kinds_any_of_its_live_probes_can() -> None:
    fleet = Fleet(interval=1.0, missed=2)
    fleet.observe(hb("a", "eu-west", 0, ["http", "tcp"]), now=0)
    fleet.observe(hb("b", "eu-west", 0, ["dns", "http"]), now=0)
    fleet.observe(hb("c", "us-east", 0, ["http"]), now=0)
    # A probe from before capabilities were announced: every kind of then, ICMP too.
    fleet.observe(hb("d", "ap-south", 0), now=0)
    assert fleet.runnable(now=1) == {
        "eu-west": {"http", "tcp", "dns"},
        "us-east": {"http"},
        "ap-south": {"http", "tcp", "udp", "icmp", "dns", "tls"},
    }
    assert fleet.can_run("eu-west", "dns", now=1) and not fleet.can_run("us-east", "tcp", now=1)
    # No live probe: not judged here (the scheduler leaves such a region out of the round).
    assert fleet.can_run("nowhere", "tcp", now=1)
    regions = ["eu-west", "us-east", "ap-south", "nowhere"]
    assert fleet.incapable(regions, "tcp", now=1) == ["us-east"]
    assert fleet.incapable(regions, "icmp", now=1) == ["eu-west", "us-east"]
    # Once the capable probe is gone, the region can no longer run the kind.
    fleet.observe(hb("b", "eu-west", 5, ["http"]), now=5)
    assert not fleet.can_run("eu-west", "tcp", now=5)


def test_a_job_no_live_probe_can_run_becomes_a_skipped_result() -> None:
    able = {"eu-west": frozenset({"http", "tcp"})}
    job = CheckJob(
        monitor_id=7, due=100.0, deadline=110.0, region="eu-west", timeout=5, spec=IcmpSpec(host="h")
    )
    result = no_capable_probe(job, able, now=100.5)
    assert result == CheckResult(
        monitor_id=7,
        due=100.0,
        region="eu-west",
        probe_id=CONTROLLER_PROBE_ID,
        status=Status.SKIPPED,
        reason=Reason.NO_CAPABLE_PROBE,
        message="no live probe in eu-west can run icmp checks",
        started_at=100.5,
    )
    tcp = CheckJob(
        monitor_id=7, due=100.0, deadline=110.0, region="eu-west", timeout=5, spec=TcpSpec(host="h", port=1)
    )
    assert no_capable_probe(tcp, able, now=100.5) is None
    elsewhere = CheckJob(
        monitor_id=7, due=100.0, deadline=110.0, region="us-east", timeout=5, spec=IcmpSpec(host="h")
    )
    assert no_capable_probe(elsewhere, able, now=100.5) is None


OUTDATED = [
    ("same-minor", "1.4.0", "1.4.2", False),
    ("previous-minor", "1.3.9", "1.4.0", False),
    ("two-minors-back", "1.2.7", "1.4.0", True),
    ("newer", "1.5.0", "1.4.0", False),
    ("older-major", "0.9.0", "1.4.0", True),
    ("x.0-takes-its-own-minor-only", "1.9.0", "2.0.1", True),
    ("v-prefix-and-suffix", "v1.3.0-rc1", "1.4.0", False),
    ("unreadable-probe", "t", "1.4.0", False),
    ("unreadable-controller", "1.0.0", "dev", False),
]


@pytest.mark.parametrize(
    ("probe", "controller", "old"), [o[1:] for o in OUTDATED], ids=[o[0] for o in OUTDATED]
)
def test_it_flags_probes_older_than_the_previous_minor(probe: str, controller: str, old: bool) -> None:
    assert outdated(probe, controller) is old


def result(region: str, due: float, probe_id: str = "p1") -> CheckResult:
    return CheckResult(
        monitor_id=1, due=due, region=region, probe_id=probe_id, status=Status.OK, started_at=due
    )


def test_the_results_flow_counts_per_region_and_gives_the_p99_of_the_last_minutes() -> None:
    flow = ResultFlow(window=300, slot=60)
    now = 6000.0
    # 99 results 0.3 s after their due, one 20 s late: p99 is inside the 0.25-0.5 bucket.
    flow.observe([result("eu-west", now - 0.3) for _ in range(99)], now)
    flow.observe([result("eu-west", now - 20)], now)
    flow.observe([result("us-east", now - 1, CONTROLLER_PROBE_ID)], now)
    assert flow.received == {"eu-west": 100}
    p99 = flow.p99("eu-west", now)
    assert p99 is not None and 0.25 < p99 <= 0.5
    assert flow.p99("us-east", now) is None
    # Only late results in the newest minute: the p99 follows them.
    later = now + 120
    flow.observe([result("eu-west", later - 40) for _ in range(200)], later)
    p99 = flow.p99("eu-west", later)
    assert p99 is not None and 30 < p99 <= 60
    # Five minutes on, nothing is left in the window; the count since start stays.
    assert flow.p99("eu-west", later + 301) is None
    assert flow.received["eu-west"] == 300
