"""Live probes per region, learned from probe heartbeats on NATS.

Every controller subscribes to all heartbeats, so each has the whole picture; a probe
is forgotten after it misses `missed` heartbeats in a row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from probefleet.controller import metrics
from probefleet.shared.wire import ProbeHeartbeat


@dataclass
class Fleet:
    interval: float = 2.0
    missed: int = 3
    probes: dict[str, tuple[ProbeHeartbeat, float]] = field(default_factory=dict)

    def observe(self, hb: ProbeHeartbeat, now: float | None = None) -> bool:
        """Record a heartbeat; True when the probe is new (or came back)."""
        now = time.time() if now is None else now
        new = hb.probe_id not in self.probes or not self._alive(self.probes[hb.probe_id][1], now)
        self.probes[hb.probe_id] = (hb, now)
        return new

    def _alive(self, seen: float, now: float) -> bool:
        return now - seen <= self.interval * self.missed

    def prune(self, now: float | None = None) -> list[ProbeHeartbeat]:
        """Forget probes that missed their heartbeats; return them."""
        now = time.time() if now is None else now
        gone = [hb for hb, seen in self.probes.values() if not self._alive(seen, now)]
        for hb in gone:
            del self.probes[hb.probe_id]
        return gone

    def live(self, now: float | None = None) -> list[ProbeHeartbeat]:
        now = time.time() if now is None else now
        return [hb for hb, seen in self.probes.values() if self._alive(seen, now)]

    def live_regions(self, now: float | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for hb in self.live(now):
            counts[hb.region] = counts.get(hb.region, 0) + 1
        return counts

    def update_metrics(self, regions: list[str]) -> None:
        """Live probes, capacity and checks in flight per region, for /metrics."""
        counts = self.live_regions()
        capacity: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        for hb in self.live():
            capacity[hb.region] = capacity.get(hb.region, 0) + hb.concurrency
            in_flight[hb.region] = in_flight.get(hb.region, 0) + hb.in_flight
        for region in set(regions) | set(counts):
            metrics.PROBES_LIVE.labels(region).set(counts.get(region, 0))
            metrics.PROBES_CAPACITY.labels(region).set(capacity.get(region, 0))
            metrics.PROBES_IN_FLIGHT.labels(region).set(in_flight.get(region, 0))
