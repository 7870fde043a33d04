"""Automatic diagnostics when a monitor goes down: each region that saw it fail runs a
diagnose job (probe/checkers/diagnose.py: traceroute, DNS answer and resolver, TLS chain).

The trigger is the incident.opened event, read from the realtime hub (the events outbox
tailed every 0.25 s by every controller), so nothing is added to the results ingest
transaction. The controller that owns the monitor's shard sends the jobs; the others pass.
A suppressed incident (its parent is down) writes no incident.opened event and so gets no
diagnostics.

The jobs are ordinary check jobs with attempt DIAGNOSTIC_ATTEMPT and no round row (as
ondemand.py's): probes run the real checker and the results consumer stores the results
in check_results like any other (same retention), where no round takes them and no status
changes. GET /incidents/{id} and /evidence read them back by monitor, attempt and time.

Bounded: at most `per_minute` jobs per region in any 60 s (per controller, which sends
only for the monitors of its shards), so a mass outage cannot flood the probes; regions
with no live probe that can run `diagnose` are skipped.

Once the results are stored, the sending controller writes the incident's one
`incident.diagnosed` event (storage/diagnostics.emit_diagnosed: at most one per incident,
whichever controller asks), which the dispatcher sends as the update of the opening's
notice, with a summary line per region. That wait is in memory and only a shortcut: every
SWEEP_S the owner of a monitor's shard also looks in the database for incidents opened in
the last LOOKBACK, older than the diagnoses' budget and the wait, that have stored
diagnoses and no incident.diagnosed event (storage/diagnostics.undiagnosed), and writes
it. So a controller that stops while waiting, or one whose monitors another controller
took over, loses no update; two controllers asking at once write it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from probefleet.controller import metrics
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.notifications.realtime import Client, Event, Hub
from probefleet.controller.storage import DB
from probefleet.controller.storage import diagnostics as diagnostics_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.shared import subjects, wire

log = logging.getLogger("probefleet.diagnostics")

# Above the on-demand runs' attempt (ondemand.ON_DEMAND_ATTEMPT = 1000).
DIAGNOSTIC_ATTEMPT = 2000
# A diagnosis runs within this many seconds at the probe.
BUDGET = 10.0
# After the budget and the grace, how long the report waits for the results to be stored,
# and how often it looks.
REPORT_SLACK = 3.0
REPORT_POLL = 0.5
_SECOND = dt.timedelta(seconds=1)
# The durable report: how often the database is swept for incidents whose diagnoses are
# stored but not reported, and how old an incident it still reports.
SWEEP_S = 2.0
LOOKBACK = dt.timedelta(minutes=15)
_TLS_SCHEMES = {"https": 443, "wss": 443}
_PLAIN_SCHEMES = {"http": 80, "ws": 80}
# Kinds whose target is not a TCP port: their diagnosis traces with UDP.
_UDP_KINDS = {"udp", "icmp", "dns"}


def spec_for(kind: str, spec: dict[str, Any] | None) -> wire.DiagnoseSpec | None:
    """What to diagnose for a monitor of `kind` with stored `spec`: its target's host, port,
    whether it speaks TLS and TCP (the traceroute's method); None when the kind has no network target."""
    spec = spec or {}
    url: str | None = None
    if kind == "api_flow":
        steps = spec.get("steps") or []
        url = steps[0].get("url") if steps and isinstance(steps[0], dict) else None
    elif kind == "browser":
        url = next((s.get("url") for s in spec.get("steps") or [] if s.get("action") == "goto"), None)
    elif isinstance(spec.get("url"), str):
        url = spec["url"]
    if url:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        if not parts.hostname:
            return None
        scheme = parts.scheme.lower()
        tls = scheme in _TLS_SCHEMES
        return wire.DiagnoseSpec(
            host=parts.hostname,
            port=port or _TLS_SCHEMES.get(scheme) or _PLAIN_SCHEMES.get(scheme),
            tls=tls,
            url=f"{scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",  # no credentials, no query
            ca_pem=spec.get("ca_pem") if tls else None,
            budget=BUDGET,
            tcp=True,
        )
    if kind == "dns":
        name = spec.get("name")
        if not name:
            return None
        return wire.DiagnoseSpec(host=str(name), resolver=spec.get("resolver"), budget=BUDGET)
    host = spec.get("host")
    if not host:
        return None
    tls_setting = spec.get("tls")
    tls = kind == "tls" or tls_setting is True or tls_setting in ("implicit", "require", "verify-full")
    return wire.DiagnoseSpec(
        host=str(host),
        port=spec.get("port"),
        tls=tls and spec.get("starttls", "none") == "none",
        server_name=spec.get("server_name") if tls else None,
        ca_pem=spec.get("ca_pem") if tls else None,
        budget=BUDGET,
        # Every kind with a host and port but udp speaks TCP: traced with SYNs to its port.
        tcp=kind not in _UDP_KINDS and spec.get("port") is not None,
    )


class RateLimit:
    """At most `per_minute` takes per region in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.taken: dict[str, deque[float]] = {}

    def take(self, region: str) -> bool:
        now = self.clock()
        taken = self.taken.setdefault(region, deque())
        while taken and taken[0] <= now - 60:
            taken.popleft()
        if len(taken) >= self.per_minute:
            return False
        taken.append(now)
        return True


class Diagnostics:
    """Sends diagnose jobs for the incidents opened on this controller's monitors."""

    def __init__(
        self,
        *,
        pool: DB,
        hub: Hub,
        fleet: Fleet,
        publish: Callable[[str, bytes], Awaitable[None]],
        owns: Callable[[int], bool],
        per_minute: int,
        grace: float,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.fleet = fleet
        self.publish = publish
        self.owns = owns
        self.limit = RateLimit(per_minute)
        self.grace = grace
        self.reports: set[asyncio.Task[int | None]] = set()
        # incident.opened events up to this id are older than LOOKBACK: not swept again.
        self.swept = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Follow incident.opened events until `stop`; a client the hub dropped (too far
        behind) is attached again and replays what it missed from the outbox. Beside it,
        the sweep writes the reports that no wait in memory wrote."""
        sweeper = asyncio.create_task(self._sweep_loop(stop), name="diagnostics-sweep")
        try:
            await self._follow(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        for task in list(self.reports):
            task.cancel()

    async def _follow(self, stop: asyncio.Event) -> None:
        last_id: int | None = None
        while not stop.is_set():
            client = Client(kind="diagnostics", topics=frozenset({"incident.updates"}), size=1024)
            self.hub.attach(client)
            try:
                if last_id is not None:
                    try:
                        missed = await self.hub.replay(client, last_id)
                    except Exception as e:  # the database away: those incidents go without
                        log.warning("diagnostics replay failed error=%s", str(e)[:200])
                        missed = []
                    for old in missed:
                        last_id = await self._handle(old)
                while not stop.is_set():
                    try:
                        ev = await client.next(wait=0.5)
                    except TimeoutError:
                        continue
                    if ev is None:  # dropped or closed: attach again
                        break
                    last_id = await self._handle(ev)
            finally:
                self.hub.detach(client)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                last_id = last_id if last_id is not None else self.hub.last_id

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_S)
            if stop.is_set():
                return
            try:
                await self.sweep(dt.datetime.now(dt.UTC))
            except Exception as e:  # the database away: the next sweep tries again
                log.warning("diagnostics sweep failed error=%s", str(e)[:200])

    @property
    def wait(self) -> dt.timedelta:
        """How long after an incident opens its diagnoses are all in (or never will be)."""
        return dt.timedelta(seconds=BUDGET + self.grace + REPORT_SLACK + SWEEP_S)

    async def sweep(self, now: dt.datetime) -> list[int]:
        """Write incident.diagnosed for this controller's incidents opened before now -
        wait (and within LOOKBACK) whose diagnoses are stored and not reported yet; the
        events written. The report of a controller that stopped while waiting."""
        written = []
        since = now - LOOKBACK
        rows = await diagnostics_store.undiagnosed(
            self.pool, DIAGNOSTIC_ATTEMPT, self.swept, since, now - self.wait, diagnostics_store.LATE
        )
        self.swept = await diagnostics_store.opened_before(self.pool, self.swept, since)
        for row in rows:
            if not self.owns(row["monitor_id"]):
                continue
            found = await diagnostics_store.for_monitor(
                self.pool,
                row["monitor_id"],
                DIAGNOSTIC_ATTEMPT,
                row["occurred_at"] - _SECOND,
                row["occurred_at"],
            )
            first: dict[str, dict[str, Any]] = {}
            for r in found:
                first.setdefault(r["region"], r)
            payload = row["payload"] or {}
            event_id = await self._emit(row["incident_id"], row["monitor_id"], row["id"], payload, first)
            if event_id is not None:
                log.info("incident.diagnosed written by the sweep incident_id=%s", row["incident_id"])
                written.append(event_id)
        return written

    async def _emit(
        self,
        incident_id: int,
        monitor_id: int,
        opened_id: int,
        payload: dict[str, Any],
        found: dict[str, dict[str, Any]],
    ) -> int | None:
        lines = [{"region": r, "summary": str(found[r]["message"] or "")} for r in sorted(found)]
        return await diagnostics_store.emit_diagnosed(
            self.pool,
            incident_id,
            monitor_id,
            dt.datetime.now(dt.UTC),
            {
                "monitor": payload.get("monitor"),
                "incident": payload.get("incident"),
                "opened_event_id": opened_id,
                "diagnostics": lines,
            },
        )

    async def _handle(self, ev: Event) -> int:
        if ev.kind == "incident.opened" and ev.monitor_id is not None and self.owns(ev.monitor_id):
            incident = ev.row["payload"].get("incident") or {}
            due = time.time()
            try:
                sent = await self.diagnose(ev.monitor_id, list(incident.get("affected_regions") or []), due)
            except Exception as e:  # the database away: these diagnostics are lost, not retried
                log.warning("diagnostics not sent monitor_id=%s error=%s", ev.monitor_id, str(e)[:200])
                sent = []
            if sent and ev.incident_id is not None:
                task = asyncio.create_task(self.report(ev, sent, due), name="diagnostics-report")
                self.reports.add(task)
                task.add_done_callback(self.reports.discard)
        return ev.id

    async def report(self, opened: Event, regions: list[str], due: float) -> int | None:
        """Wait for the diagnoses sent at `due` to `regions` (at most their budget and the
        grace, plus the time to store them), then write the incident's one
        incident.diagnosed event: its notifications are the incident's update with the
        diagnosis (dispatcher.py). Nothing when no diagnosis came back."""
        assert opened.monitor_id is not None and opened.incident_id is not None
        at = dt.datetime.fromtimestamp(due, dt.UTC)
        wanted = set(regions)
        deadline = time.monotonic() + BUDGET + self.grace + REPORT_SLACK
        found: dict[str, dict[str, Any]] = {}
        while True:
            try:
                rows = await diagnostics_store.for_monitor(
                    self.pool,
                    opened.monitor_id,
                    DIAGNOSTIC_ATTEMPT,
                    at - _SECOND,
                    at + _SECOND - diagnostics_store.LATE,
                )
            except Exception as e:  # the database away for a moment: ask again
                log.warning("diagnostics not read incident_id=%s error=%s", opened.incident_id, str(e)[:200])
                rows = []
            for row in rows:
                if row["region"] in wanted and abs((row["due"] - at).total_seconds()) < 0.001:
                    found.setdefault(row["region"], row)
            if set(found) >= wanted or time.monotonic() >= deadline:
                break
            await asyncio.sleep(REPORT_POLL)
        if not found:
            return None
        try:
            return await self._emit(
                opened.incident_id, opened.monitor_id, opened.id, opened.row["payload"], found
            )
        except Exception as e:  # the database away: the sweep writes it later
            log.warning(
                "incident.diagnosed not written incident_id=%s error=%s", opened.incident_id, str(e)[:200]
            )
            return None

    async def diagnose(self, monitor_id: int, regions: list[str], due: float | None = None) -> list[str]:
        """Send a diagnose job for `monitor_id` to each of `regions` that has a live probe
        able to run it, within the rate limit; the regions it was sent to."""
        if not regions:
            return []
        monitor = await monitor_store.get(self.pool, monitor_id)
        spec = spec_for(monitor["kind"], monitor["spec"]) if monitor else None
        if monitor is None or spec is None:
            return []
        due = due if due is not None else time.time()
        able = self.fleet.runnable(due)
        sent = []
        for region in regions:
            if "diagnose" not in able.get(region, frozenset()):
                metrics.DIAGNOSTICS.labels("no_probe").inc()
                continue
            if not self.limit.take(region):
                metrics.DIAGNOSTICS.labels("rate_limited").inc()
                log.info("diagnostics rate-limited monitor_id=%s region=%s", monitor_id, region)
                continue
            job = wire.CheckJob(
                monitor_id=monitor_id,
                due=due,
                region=region,
                timeout=BUDGET,
                deadline=due + BUDGET + self.grace,
                spec=spec,
                attempt=DIAGNOSTIC_ATTEMPT,
                name=str(monitor.get("name") or ""),
            )
            await self.publish(subjects.jobs(region), wire.encode(job))
            metrics.DIAGNOSTICS.labels("sent").inc()
            sent.append(region)
        return sent
