"""Live probes per region: joined on a heartbeat, forgotten after missed heartbeats."""

from __future__ import annotations

from probefleet.controller.cluster.fleet import Fleet
from probefleet.shared.wire import ProbeHeartbeat


def hb(probe_id: str, region: str, at: float) -> ProbeHeartbeat:
    return ProbeHeartbeat(
        probe_id=probe_id, region=region, version="t", concurrency=10, in_flight=0, started_at=0.0, sent_at=at
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


def test_a_probe_that_comes_back_is_new_again() -> None:
    fleet = Fleet(interval=1.0, missed=2)
    fleet.observe(hb("a", "ap-south", 0), now=0)
    assert fleet.observe(hb("a", "ap-south", 10), now=10) is True
