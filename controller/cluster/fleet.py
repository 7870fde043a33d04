"""Live probes per region, learned from probe heartbeats on NATS, and what each region's
results look like on arrival.

Every controller subscribes to all heartbeats, so each has the whole picture; a probe
is forgotten after it misses `missed` heartbeats in a row. While this controller's own NATS
connection is down it hears no heartbeat: the fleet is blind, not empty, and keeps the view
it had at the disconnect until `missed` intervals after the reconnect (`disconnected`,
`reconnected`), the time a live probe needs to be heard again. From the heartbeats: which
kinds a region can run now (`runnable`, `can_run`) and which probes run a version older
than this controller accepts (`outdated`). `FLOW` counts the results this controller
stores per region and keeps their delay (due time to stored) over the last minutes, for
the regions API.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from probefleet.controller import metrics
from probefleet.shared import subjects
from probefleet.shared.version import VERSION
from probefleet.shared.wire import CheckJob, CheckResult, CheckSpec, ProbeHeartbeat, Reason, Status

# The kinds every probe ran before heartbeats carried `capabilities`: a probe that sends
# none (an older minor version, still accepted) is taken to run all of these, ICMP too, so
# a rolling upgrade does not stop a check that ran before it. New kinds are never assumed.
LEGACY_KINDS = frozenset({"http", "tcp", "udp", "icmp", "dns", "tls"})
# The probe id of the results the controller writes itself (a region with no capable probe).
CONTROLLER_PROBE_ID = "controller"

_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string, or None when it does not start with them."""
    m = _VERSION.match(version)
    return (int(m[1]), int(m[2])) if m else None


def outdated(version: str, current: str = VERSION) -> bool:
    """Whether a probe of `version` is older than this controller (`current`) supports: its
    own minor version and the previous one are accepted (1.4 takes 1.4.x and 1.3.x; 2.0
    takes 2.0.x only, as the previous minor of a major is unknown). A version either side
    cannot read is not flagged: nothing can be said of it."""
    mine, theirs = minor(current), minor(version)
    if mine is None or theirs is None:
        return False
    return theirs < (mine[0], mine[1] - 1)


def no_capable_probe(job: CheckJob, able: dict[str, frozenset[str]], now: float) -> CheckResult | None:
    """The result that stands for `job` when its region's live probes cannot run its kind
    (`able`: `Fleet.runnable`), else None. Skipped, so consensus leaves the region out of
    the vote: a round no region could run is `unknown`, never `down`."""
    kind = kind_of(job.spec)
    if job.region not in able or kind in able[job.region]:
        return None
    return CheckResult(
        monitor_id=job.monitor_id,
        due=job.due,
        region=job.region,
        attempt=job.attempt,
        probe_id=CONTROLLER_PROBE_ID,
        status=Status.SKIPPED,
        reason=Reason.NO_CAPABLE_PROBE,
        message=f"no live probe in {job.region} can run {kind} checks",
        started_at=now,
    )


def job_route(job: CheckJob, routes: dict[str, dict[str, int]]) -> tuple[str, int | None]:
    """The subject `job` is published on and how many live probes take that kind there: its
    kind subject when its region routes the kind there (`Fleet.kind_routes`), else the
    region subject (and None: all the region's probes hear it)."""
    if job.region in routes:
        kind = kind_of(job.spec)
        takers = routes[job.region].get(kind)
        if takers is not None:
            return subjects.jobs_kind(job.region, kind), takers
    return subjects.jobs(job.region), None


def kind_of(spec: CheckSpec) -> str:
    return str(spec.__struct_config__.tag)


def kinds(hb: ProbeHeartbeat) -> frozenset[str]:
    """The kinds a probe can run, as its heartbeat says (LEGACY_KINDS when it says none)."""
    return frozenset(hb.capabilities) if hb.capabilities else LEGACY_KINDS


@dataclass
class Fleet:
    interval: float = 2.0
    missed: int = 3
    probes: dict[str, tuple[ProbeHeartbeat, float]] = field(default_factory=dict)
    # The regions whose series update_metrics last set, so those of a deleted one can go.
    _exported: set[str] = field(default_factory=set)
    # The version probes are compared with (`outdated`): this controller's.
    version: str = VERSION
    # Blindness (our own NATS connection down): since when, whether still down, and until
    # when the view stays kept after the reconnect.
    blind_since: float | None = None
    connected: bool = True
    blind_until: float = 0.0

    @property
    def window(self) -> float:
        """Seconds after which a silent probe is forgotten; also how long the scheduler's
        warm-up after start and the blindness after a reconnect last."""
        return self.interval * self.missed

    def disconnected(self, now: float | None = None) -> None:
        """This controller lost NATS: from now, no probe ages out (see `reconnected`)."""
        now = time.time() if now is None else now
        if self.blind_since is None or not self.blind(now):
            self.blind_since = now
        self.connected = False

    def reconnected(self, now: float | None = None) -> None:
        """NATS is back: the view kept since the disconnect holds for one more `window`,
        while the probes reconnect and heartbeat again; then normal aging resumes."""
        now = time.time() if now is None else now
        self.connected = True
        self.blind_until = now + self.window

    def blind(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not self.connected or now < self.blind_until

    def observe(self, hb: ProbeHeartbeat, now: float | None = None) -> bool:
        """Record a heartbeat; True when the probe is new (or came back)."""
        now = time.time() if now is None else now
        new = hb.probe_id not in self.probes or not self._alive(self.probes[hb.probe_id][1], now)
        self.probes[hb.probe_id] = (hb, now)
        return new

    def _alive(self, seen: float, now: float) -> bool:
        if now - seen <= self.window:
            return True
        # Blind: live if it was live when we lost NATS.
        return self.blind_since is not None and self.blind(now) and self.blind_since - seen <= self.window

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

    def settled_until(self, now: float | None = None) -> float | None:
        """Up to when every live probe is known to hold no unacknowledged result: the
        earliest, over them, of its last heartbeat's arrival and the due time of the oldest
        job it still held then (`unacked_since`). A result a probe is still retrying (a
        stream changing leader) is not in JetStream yet, so the sweeper closes no round
        whose deadline is after this. None: no live probe (nothing can be held). A probe
        that stops heartbeating holds it back until it is forgotten (`missed` intervals)."""
        now = time.time() if now is None else now
        points = [
            seen if hb.unacked_since is None else min(seen, hb.unacked_since)
            for hb, seen in self.probes.values()
            if self._alive(seen, now)
        ]
        return min(points) if points else None

    def live_regions(self, now: float | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for hb in self.live(now):
            counts[hb.region] = counts.get(hb.region, 0) + 1
        return counts

    def batching(self, now: float | None = None) -> dict[str, int]:
        """The regions whose every live probe takes jobs ahead and in batches (heartbeat
        `job_batches`), each with its number of live probes. A region with one probe that
        does not is left out: the queue group may hand it any message, and it could neither
        read an array nor wait for a job's due time."""
        counts: dict[str, int] = {}
        single: set[str] = set()
        for hb in self.live(now):
            counts[hb.region] = counts.get(hb.region, 0) + 1
            if not hb.job_batches:
                single.add(hb.region)
        return {r: n for r, n in counts.items() if r not in single}

    def runnable(self, now: float | None = None) -> dict[str, frozenset[str]]:
        """The kinds each region's live probes can run between them (regions with a live
        probe only)."""
        out: dict[str, frozenset[str]] = {}
        for hb in self.live(now):
            out[hb.region] = out.get(hb.region, frozenset()) | kinds(hb)
        return out

    def kind_routes(self, now: float | None = None) -> dict[str, dict[str, int]]:
        """Per region, the kinds whose jobs go on their kind subject (`subjects.jobs_kind`),
        each with the number of live probes that take it there: the kinds some live probe
        of the region cannot run while every live probe that can lists the kind in its
        heartbeat's `kind_subjects`. Any other kind goes on the region subject: the whole
        region can run it, or a probe able to run it would not hear its kind subject (an
        older version, or a credential issued before kind subjects)."""
        live = self.live(now)
        by_region: dict[str, list[ProbeHeartbeat]] = {}
        for hb in live:
            by_region.setdefault(hb.region, []).append(hb)
        out: dict[str, dict[str, int]] = {}
        for region, probes in by_region.items():
            offered = {k for hb in probes for k in hb.kind_subjects}
            routes: dict[str, int] = {}
            for kind in offered:
                able = [hb for hb in probes if kind in kinds(hb)]
                if len(able) < len(probes) and all(kind in hb.kind_subjects for hb in able):
                    routes[kind] = len(able)
            if routes:
                out[region] = routes
        return out

    def can_run(self, region: str, kind: str, now: float | None = None) -> bool:
        """False when `region` has live probes and none of them can run `kind`. A region
        with no live probe is not judged here: the scheduler leaves it out of its rounds
        (a missing answer), as before capabilities existed."""
        able = self.runnable(now).get(region)
        return able is None or kind in able

    def incapable(self, regions: Iterable[str], kind: str, now: float | None = None) -> list[str]:
        """Those of `regions` whose live probes cannot run `kind` (see `can_run`)."""
        able = self.runnable(now)
        return [r for r in regions if r in able and kind not in able[r]]

    def outdated(self, hb: ProbeHeartbeat) -> bool:
        return outdated(hb.version, self.version)

    def update_metrics(self, regions: list[str]) -> None:
        """Live probes, capacity, checks in flight and outdated probes per region, for /metrics."""
        counts = self.live_regions()
        capacity: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        old: dict[str, int] = {}
        for hb in self.live():
            capacity[hb.region] = capacity.get(hb.region, 0) + hb.concurrency
            in_flight[hb.region] = in_flight.get(hb.region, 0) + hb.in_flight
            old[hb.region] = old.get(hb.region, 0) + self.outdated(hb)
        current = set(regions) | set(counts)
        for region in current:
            metrics.PROBES_LIVE.labels(region).set(counts.get(region, 0))
            metrics.PROBES_CAPACITY.labels(region).set(capacity.get(region, 0))
            metrics.PROBES_IN_FLIGHT.labels(region).set(in_flight.get(region, 0))
            metrics.PROBES_OUTDATED.labels(region).set(old.get(region, 0))
        # A deleted region's series go, or its probes_live 0 would page "region down" forever.
        self._drop_series(self._exported - current)
        self._exported = current

    def clear_metrics(self) -> None:
        """Remove every series this fleet exported (the controller is stopping)."""
        self._drop_series(self._exported)
        self._exported = set()

    @staticmethod
    def _drop_series(regions: Iterable[str]) -> None:
        for region in regions:
            for gauge in (
                metrics.PROBES_LIVE,
                metrics.PROBES_CAPACITY,
                metrics.PROBES_IN_FLIGHT,
                metrics.PROBES_OUTDATED,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(region)


# Upper bounds (seconds) of the delay histogram, and of the regions API's p99 estimate.
DELAY_BUCKETS = metrics.RESULT_DELAY_BUCKETS


@dataclass
class ResultFlow:
    """Results stored per region (since start) and their delay, from the round's due time
    to stored, over the last `window` seconds in `slot`-second buckets: the regions API's
    p99 answers for the last few minutes, not for the controller's whole life. A region
    whose probes cannot keep up starts its checks late, so this delay is the one to scale
    probes on (probefleet_result_lag_seconds starts at the check's end and misses it)."""

    window: float = 300.0
    slot: float = 60.0
    received: dict[str, int] = field(default_factory=dict)
    # Per region: (slot number, counts per bucket of DELAY_BUCKETS plus one above), oldest first.
    slots: dict[str, deque[tuple[int, list[int]]]] = field(default_factory=dict)

    def observe(self, results: Iterable[CheckResult], now: float) -> None:
        """Count a stored batch (the controller's own no-capable-probe results left out)."""
        number = int(now // self.slot)
        for r in results:
            if r.probe_id == CONTROLLER_PROBE_ID:
                continue
            delay = max(0.0, now - r.due)
            self.received[r.region] = self.received.get(r.region, 0) + 1
            metrics.RESULTS_RECEIVED.labels(r.region).inc()
            metrics.RESULT_DELAY.labels(r.region).observe(delay)
            ring = self.slots.setdefault(r.region, deque())
            if not ring or ring[-1][0] != number:
                ring.append((number, [0] * (len(DELAY_BUCKETS) + 1)))
                while ring and ring[0][0] <= number - self.window / self.slot:
                    ring.popleft()
            ring[-1][1][bisect.bisect_left(DELAY_BUCKETS, delay)] += 1

    def p99(self, region: str, now: float) -> float | None:
        """The region's 99th percentile delay over the window, interpolated inside its
        bucket as Prometheus' histogram_quantile does; None with no result in the window."""
        oldest = int(now // self.slot) - self.window / self.slot
        counts = [0] * (len(DELAY_BUCKETS) + 1)
        for number, slot in self.slots.get(region, ()):
            if number > oldest:
                counts = [a + b for a, b in zip(counts, slot, strict=True)]
        total = sum(counts)
        if not total:
            return None
        rank, seen = math.ceil(0.99 * total), 0
        for i, n in enumerate(counts):
            if seen + n >= rank:
                if i == len(DELAY_BUCKETS):
                    return DELAY_BUCKETS[-1]
                low = DELAY_BUCKETS[i - 1] if i else 0.0
                return low + (DELAY_BUCKETS[i] - low) * (rank - seen) / n
            seen += n
        return DELAY_BUCKETS[-1]


# The process's one flow record: results.ingest fills it, the regions API reads it.
FLOW = ResultFlow()
