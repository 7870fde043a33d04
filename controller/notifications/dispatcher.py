"""The notification dispatcher: events outbox -> deliveries -> notifiers and subscribers.

Two steps, each safe with any number of controllers:

- `fan_out(now)` reads events after the watermark, creates one delivery row per
  matching channel (INSERT ... ON CONFLICT DO NOTHING on the unique key
  (event_id, channel_id, kind, seq)) and one per status-page subscriber the event concerns
  (key (event_id, subscriber_id, kind, seq)), and advances the watermark with compare-and-set.
- `process_batch(now)` claims due deliveries (UPDATE ... WHERE id IN (SELECT ... FOR
  UPDATE SKIP LOCKED) with a lease), sends them, and records the outcome only if the
  claim is still ours. A crashed sender's lease expires and another controller retries.

Reminders and escalations are deliveries too, due later and cancelled at send time when
the incident is no longer unacknowledged. Subscribers are one more kind of destination
(the `Subscribers` protocol, implemented by status_pages/subscribers.py): their notices
are claimed, retried and recorded like a channel's, but a notice that cannot be sent
disables nothing. See docs/architecture/notifications.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import msgspec

from probefleet.controller import metrics
from probefleet.controller.notifications.notifiers import NOTIFIERS, parse_config
from probefleet.controller.notifications.notifiers.base import (
    CheckInfo,
    Event,
    IncidentInfo,
    MonitorInfo,
    Notification,
    NotifierError,
    last_status,
    start_attempt,
)
from probefleet.controller.outage import Outage
from probefleet.controller.storage import DB, db
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import incidents as incident_store
from probefleet.controller.storage import notifications as store
from probefleet.controller.storage.notifications import GATED_EVENTS, NewDelivery, NewNotice, Outcome

log = logging.getLogger("probefleet.dispatcher")

# NOTIFYed by a statement trigger on events (migration 0010), at the commit of the change.
EVENTS_CHANNEL = "probefleet_events"

NOTIFIABLE: frozenset[str] = frozenset(get_args(Event)) - {"test"}
# What a rule with no `events`, and a monitor's own `notifications` list, send: one
# message per outage (incident.opened, not also monitor.down) and per recovery.
DEFAULT_EVENTS: frozenset[str] = frozenset(
    {
        "incident.opened",
        "incident.diagnosed",
        "incident.acknowledged",
        "incident.resolved",
        "monitor.degraded",
        "ssl.expiring",
    }
)
# The update of an incident.opened notice with the failing regions' diagnoses
# (engine/diagnostics.py writes one per incident): it goes where the opening went.
DIAGNOSED = "incident.diagnosed"
# Delivery states of an opening that went, or will go, out (a 'grouped' one is listed by
# its leader): its update goes as any notice. A held opening's update is held with it (same
# hold), a suppressed (flapping) one's suppressed with it; a cancelled opening gets none.
OPENING_SENT = ("pending", "sending", "delivered", "failed", "grouped")
OPENING_WAITING = ("held", "suppressed")
RECOVERY_EVENTS = frozenset({"incident.resolved", "monitor.up"})
# Channels that key one alert per incident (dedup_key, alias): a trigger that reaches them
# after the resolve (a retry, a replay, or the two sent in one batch and racing) would open
# a second alert for an outage that is over, so it is cancelled at send time instead.
KEYED_CHANNELS = frozenset({"pagerduty", "opsgenie"})
TRIGGER_EVENTS = frozenset({"incident.opened", "monitor.down", "monitor.degraded", DIAGNOSED})
SEVERITIES = ("low", "medium", "high", "critical")
# Severity of events that carry no incident; recoveries pass every minimum.
EVENT_SEVERITY = {
    "monitor.down": "high",
    "monitor.degraded": "medium",
    "ssl.expiring": "medium",
    "region.unavailable": "low",
}


@dataclass(frozen=True)
class Settings:
    batch: int = 500
    concurrency: int = 200
    lease_s: float = 60.0
    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    max_attempts: int = 10
    # Flapping (Nagios): over the last flap_results round verdicts, the weighted percentage
    # of state changes goes above flap_high; it has settled once below flap_low.
    flap_results: int = 21
    flap_high: float = 30.0
    flap_low: float = 25.0
    # Monitors without rounds (heartbeats): more than flap_changes state changes within
    # flap_window_s.
    flap_changes: int = 5
    flap_window_s: float = 600.0
    # How long an id gap in the events table may hold the watermark (see fan_out).
    gap_wait_s: float = 10.0
    poll_s: float = 0.5
    # While the LISTEN connection stands, new events wake the loop at once and the poll is
    # only for what comes due by time: when nothing is (`store.waiting`), empty steps double
    # the wait up to this (an idle step is about eight statements).
    poll_idle_s: float = 2.0


@dataclass
class Route:
    """Why one channel gets one event: the reminder period, if any, and the grouping of
    the first matching rule that groups (group_by keys, window in seconds)."""

    reminder_s: int | None = None
    group: tuple[list[str], int] | None = None

    def merge(self, reminder_s: int | None) -> None:
        if reminder_s is not None:
            self.reminder_s = min(self.reminder_s or reminder_s, reminder_s)


def _minutes(value: int | None) -> int | None:
    return value * 60 if value else None


def severity_of(event: dict[str, Any]) -> str | None:
    incident = event["payload"].get("incident") or {}
    if incident.get("severity") in SEVERITIES:
        return str(incident["severity"])
    return EVENT_SEVERITY.get(event["kind"])


def rule_matches(
    rule: dict[str, Any], event: dict[str, Any], tags: Iterable[str], policy_id: int | None = None
) -> bool:
    """Whether `rule` routes `event`. A monitor whose escalation_policy names the rule
    passes its monitor and tag filters; a policy rule (is_policy) routes only such
    monitors and the ones its own filters name."""
    events = set(rule["events"]) or DEFAULT_EVENTS
    if event["kind"] == DIAGNOSED and "incident.opened" in events:
        pass  # an update of the opening this rule routed
    elif event["kind"] not in events:
        return False
    if policy_id is not None and rule["id"] == policy_id:
        pass
    elif rule["monitor_ids"] or rule["tags"]:
        in_ids = event["monitor_id"] in rule["monitor_ids"]
        if not in_ids and not set(rule["tags"]) & set(tags):
            return False
    elif rule.get("is_policy"):
        return False
    minimum, sev = rule["min_severity"], severity_of(event)
    if minimum and sev is not None and event["kind"] not in RECOVERY_EVENTS:
        return SEVERITIES.index(sev) >= SEVERITIES.index(minimum)
    return True


def routes_for(
    event: dict[str, Any],
    rules: list[dict[str, Any]],
    monitor: dict[str, Any] | None,
    channels: dict[int, dict[str, Any]],
) -> dict[int, Route]:
    """Enabled channel id -> Route for one event (pure)."""
    out: dict[int, Route] = {}
    tags, policy = _routing(monitor)
    for rule in rules:
        if rule_matches(rule, event, tags, policy):
            for cid in rule["channel_ids"]:
                route = out.setdefault(cid, Route())
                route.merge(_minutes(rule["reminder_minutes"]))
                if rule.get("group_window_s") and route.group is None:
                    route.group = (list(rule.get("group_by") or []), int(rule["group_window_s"]))
    if monitor and event["kind"] in DEFAULT_EVENTS:
        for cid in monitor["notifications"]:
            out.setdefault(cid, Route())
    for cid, route in list(out.items()):
        channel = channels.get(cid)
        if channel is None or not channel["is_enabled"]:
            del out[cid]
        else:
            route.merge(_minutes(channel["reminder_minutes"]))
    return out


def _routing(monitor: dict[str, Any] | None) -> tuple[list[str], int | None]:
    if monitor is None:
        return [], None
    return list(monitor["tags"]), monitor.get("escalation_policy_id")


def follow_opening(rows: list[NewDelivery], opening: dict[int, tuple[str, str | None]]) -> list[NewDelivery]:
    """An incident.diagnosed's deliveries, given its opening's per channel: none where the
    opening has none (or was cancelled); held with the same hold where the opening is held
    (released, or cancelled, with it); suppressed where it is suppressed (flapping: sent
    after the opening if that is released when the monitor settles, else collapsed with
    it, storage release_settled); as they are where the opening went out."""
    out = []
    for row in rows:
        state = opening.get(row.channel_id or 0)
        if state is None:
            continue
        status, reason = state
        if status == "held" and row.status != "suppressed":
            row = row._replace(status="held", hold_reason=reason)
        elif status == "suppressed":
            row = row._replace(status="suppressed", hold_reason=None, group_key=None)
        out.append(row)
    return out


def _update_of(d: dict[str, Any], events: dict[int, dict[str, Any]]) -> tuple[int, int] | None:
    """For a claimed incident.diagnosed notice: (its channel, the opening it updates)."""
    event = events.get(d["event_id"] or 0)
    if event is None or event["kind"] != DIAGNOSED or d["kind"] != "event" or d["channel_id"] is None:
        return None
    opened = event["payload"].get("opened_event_id")
    return (d["channel_id"], opened) if isinstance(opened, int) else None


# The events of an outage starting; grouping gathers these (recoveries go one by one, so
# a keyed channel resolves each alert it opened).
GROUPED_EVENTS = frozenset({"monitor.down", "monitor.degraded", "incident.opened", DIAGNOSED})
GROUP_KEYS = ("parent", "tag", "host", "region")


def group_key(event: dict[str, Any], monitor: dict[str, Any] | None, group_by: Iterable[str]) -> str | None:
    """The first of the rule's `group_by` keys that this outage has, with the event kind
    (so monitor.down and incident.opened group apart): the parent monitor, the first tag,
    the target host, or the failing regions when not every location fails."""
    if event["kind"] not in GROUPED_EVENTS:
        return None
    payload = event["payload"]
    shown = payload.get("monitor") or {}
    for by in group_by:
        key = None
        if by == "parent" and monitor and monitor.get("parent_id"):
            key = f"parent:{monitor['parent_id']}"
        elif by == "tag" and monitor and monitor.get("tags"):
            key = f"tag:{sorted(monitor['tags'])[0]}"
        elif by == "host" and (target := str(shown.get("target") or "")):
            host = urlsplit(target).hostname if "://" in target else target.rsplit(":", 1)[0]
            key = f"host:{host}" if host else None
        elif by == "region":
            failing = set((payload.get("incident") or {}).get("affected_regions") or [])
            if not failing and (check := payload.get("check")) and check.get("status") == "fail":
                failing = {check["region"]}
            if failing and failing < set(shown.get("locations") or []):
                key = f"region:{','.join(sorted(failing))}"
        if key:
            return f"{event['kind']}|{key}"
    return None


def regroup_recovery(event: dict[str, Any], channel: dict[str, Any]) -> bool:
    """Whether a recovery may go out grouped (if its outage did, see
    Dispatcher._recovery_groups): not on channels that key one alert per incident, where
    each monitor's resolve must close the alert its own trigger opened."""
    return event["kind"] in RECOVERY_EVENTS and channel["kind"] not in KEYED_CHANNELS


def held_back(event: dict[str, Any], monitor: dict[str, Any] | None, threshold: int) -> bool:
    """Whether the event's notices wait for the monitor's alert_threshold: a monitor.down
    or a down incident.opened of a monitor that has not yet failed `threshold`
    consecutive rounds (fail_streak)."""
    if threshold <= 1 or event["kind"] not in GATED_EVENTS:
        return False
    shown = (event["payload"].get("monitor") or {}).get("status")
    if event["kind"] == "incident.opened" and shown != "down":
        return False
    if monitor is None:
        return False
    return not (monitor["status"] == "down" and monitor["fail_streak"] >= threshold)


def flap_percent(states: Sequence[str], window: int = 21) -> float:
    """Nagios' percent state change over the last `window` results: of the transitions
    between consecutive results, the ones that changed state, each weighted from 0.8
    (oldest) to 1.2 (newest) so that a monitor settling stops counting as flapping sooner
    than one starting to flap. A shorter history counts as steady before its first result
    (as Nagios fills its history with the first state): two changes in a monitor's first
    five rounds are not 50 %."""
    if not states:
        return 0.0
    states = [states[0]] * (window - len(states)) + list(states[-window:])
    n = len(states)
    if n < 2:
        return 0.0
    changed = 0.0
    for i in range(1, n):
        if states[i] != states[i - 1]:
            changed += 0.8 + 0.4 * (i - 1) / max(1, n - 2)
    return 100.0 * changed / (n - 1)


def is_flapping(was: bool, percent: float, settings: Settings) -> bool:
    """Hysteresis: start above flap_high, stop only below flap_low."""
    return percent >= settings.flap_low if was else percent > settings.flap_high


def escalations_for(
    event: dict[str, Any],
    rules: list[dict[str, Any]],
    monitor: dict[str, Any] | None,
    channels: dict[int, dict[str, Any]],
) -> dict[int, tuple[int, int | None]]:
    """Escalation channel id -> (delay in seconds, reminder period) for an incident.opened event."""
    if event["kind"] != "incident.opened" or event["incident_id"] is None:
        return {}
    tags, policy = _routing(monitor)
    out: dict[int, tuple[int, int | None]] = {}
    for rule in rules:
        after = rule["escalate_after_minutes"]
        if not after or not rule_matches(rule, event, tags, policy):
            continue
        for cid in rule["escalation_channel_ids"]:
            if cid in channels and channels[cid]["is_enabled"]:
                delay = min(after * 60, out.get(cid, (after * 60, None))[0])
                out[cid] = (delay, _minutes(rule["reminder_minutes"]))
    return out


def backoff(attempts: int, settings: Settings, retry_after: float | None, rng: Callable[[], float]) -> float:
    """Exponential with 'equal jitter' (half fixed, half random), never sooner than retry_after."""
    delay = min(settings.retry_max_s, settings.retry_base_s * 2 ** max(0, attempts - 1))
    delay = delay / 2 + delay / 2 * rng()
    return max(delay, min(retry_after or 0.0, settings.retry_max_s * 24))


def _ts(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def notification(
    event: dict[str, Any], delivery: dict[str, Any], base_url: str | None = None
) -> Notification:
    """The notifier's view of one event row, for one delivery; `base_url` (the controller's
    public address) makes the link to the incident's, or the monitor's, console page."""
    p = event["payload"]
    m = p.get("monitor") or {}
    monitor = MonitorInfo(
        id=m.get("id", event["monitor_id"] or 0),
        name=str(m.get("name") or ""),
        target=str(m.get("target") or ""),
        type=str(m.get("type") or ""),
        status=str(m.get("status") or ""),
        locations=list(m.get("locations") or []),
    )
    incident = None
    if (i := p.get("incident")) is not None:
        incident = IncidentInfo(
            id=i.get("id", event["incident_id"]),
            status=str(i.get("status") or "active"),
            severity=i.get("severity"),
            started_at=_ts(i.get("started_at")),
            resolved_at=_ts(i.get("resolved_at")),
            duration_s=i.get("duration_s"),
            root_cause=i.get("root_cause"),
            affected_regions=list(i.get("affected_regions") or []),
            checks_failed=i.get("checks_failed"),
            checks_total=i.get("checks_total"),
        )
    check = None
    if (c := p.get("check")) is not None:
        check = msgspec.convert({k: v for k, v in c.items() if k in CheckInfo.__struct_fields__}, CheckInfo)
    kind = delivery["kind"]
    key = str(event["id"]) if kind == "event" else f"{event['id']}-{kind}-{delivery['seq']}"
    found = [
        f"{d.get('region')}: {d.get('summary') or 'no answer'}"
        for d in p.get("diagnostics") or []
        if isinstance(d, dict)
    ]
    return Notification(
        event=event["kind"],
        event_id=event["id"],
        diagnostics=found,
        timestamp=event["occurred_at"].timestamp(),
        monitor=monitor,
        incident=incident,
        check=check,
        reminder=kind == "reminder",
        escalation_level=1 if kind == "escalation" else 0,
        delivery_key=key,
        link=_link(base_url, incident, monitor),
    )


def _link(base_url: str | None, incident: IncidentInfo | None, monitor: MonitorInfo) -> str | None:
    if not base_url:
        return None
    base = base_url.rstrip("/")
    if incident is not None and incident.id:
        return f"{base}/console/incidents/{incident.id}"
    return f"{base}/console/monitors/{monitor.id}" if monitor.id else None


def test_notification(delivery_id: int, now: dt.datetime) -> Notification:
    return Notification(
        event="test",
        event_id=0,
        timestamp=now.timestamp(),
        monitor=MonitorInfo(
            id=0, name="probefleet test notification", target="https://example.com", type="http", status="up"
        ),
        delivery_key=f"test-{delivery_id}",
    )


async def send(session: aiohttp.ClientSession, channel: dict[str, Any], note: Notification) -> None:
    """Send with the channel's notifier; raise NotifierError (never with a secret in it)."""
    try:
        config = parse_config(channel["kind"], channel["config"])
    except (msgspec.ValidationError, ValueError) as e:
        raise NotifierError(f"{channel['kind']}: stored config is invalid: {e}", permanent=True) from None
    await NOTIFIERS[channel["kind"]].send(session, config, note)


class Subscribers(Protocol):
    """Status-page subscribers as destinations: the notices a batch of events makes for
    them, where each subscriber's notices go, and sending one (NotifierError on failure)."""

    async def notices(self, conn: DB, events: list[dict[str, Any]]) -> list[NewNotice]: ...

    async def targets(self, conn: DB, ids: list[int]) -> dict[int, Any]: ...

    async def send(self, target: Any, delivery: dict[str, Any]) -> None: ...


def _outcome(
    d: dict[str, Any],
    status: str,
    error: str | None = None,
    at: dt.datetime | None = None,
    started: float | None = None,
) -> Outcome:
    """The outcome of one attempt; `started` (a perf_counter reading) when something was
    sent, for the delivery log's duration and HTTP status."""
    if started is None:
        return Outcome(d["id"], d["attempts"], status, error, at)
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    return Outcome(d["id"], d["attempts"], status, error, at, last_status(), elapsed)


@dataclass
class Dispatcher:
    pool: DB
    session: aiohttp.ClientSession
    # The controller always gives it; a dispatcher without (tests, benches) writes and claims
    # no subscriber notice, so the events it fans out reach no subscriber.
    subscribers: Subscribers | None = None
    settings: Settings = field(default_factory=Settings)
    rng: Callable[[], float] = random.random
    # The controller's public address (public_url): notifications link to the console.
    base_url: str | None = None
    _gap: tuple[int, dt.datetime] | None = None
    # (event id, channel id) -> grouping window (s) of the rows of the current fan-out
    _windows: dict[tuple[int, int], int] = field(default_factory=dict)
    # (event id, channel id) -> (monitor id, event kind) of the current fan-out's recoveries
    # on grouping routes: grouped too if the outage they end went out in a group.
    _recoveries: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    # ---------------------------------------------------------------- fan-out

    async def fan_out(self, now: dt.datetime) -> int:
        """One batch of events -> delivery rows; returns how many rows were created."""
        last = await store.watermark(self.pool)
        events = await store.events_after(self.pool, last, self.settings.batch)
        if not events:
            return 0
        rules = await store.list_rules(self.pool, enabled_only=True)
        monitor_ids = {e["monitor_id"] for e in events if e["monitor_id"] is not None}
        monitors = await store.monitor_routing(self.pool, list(monitor_ids))
        wanted = {c for r in rules for c in (*r["channel_ids"], *r["escalation_channel_ids"])}
        wanted |= {c for m in monitors.values() for c in m["notifications"]}
        channels = await store.channels_by_id(self.pool, list(wanted))
        judged = await self.judge_flapping(list(monitor_ids), now)
        window = dt.timedelta(seconds=self.settings.flap_window_s)
        unjudged = [m for m in monitor_ids if m not in judged]
        changes = await store.state_changes(self.pool, unjudged, now - window, events[-1]["id"])
        flapping = {m for m, n in changes.items() if n > self.settings.flap_changes}
        flapping |= {m for m, f in judged.items() if f}
        settings = await store.alert_settings(self.pool, list(monitor_ids))
        quiet_recovery = {m for m, a in settings.items() if not a["alert_on_recovery"]}
        rows: list[NewDelivery] = []
        held: dict[int, bool] = {}  # monitor -> whether its latest outage in this batch is held
        for event in events:
            mid = event["monitor_id"]
            if mid in quiet_recovery and event["kind"] in RECOVERY_EVENTS:
                continue
            monitor = monitors.get(mid)
            has_parent = monitor is not None and monitor.get("parent_id") is not None
            recovery = (mid in settings or has_parent) and event["kind"] in RECOVERY_EVENTS
            if recovery and await self._unalerted(mid, event["id"], held, now):
                rows = [r for r in rows if not (r.monitor_id == mid and r.status == "held")]
                continue
            threshold = settings[mid]["alert_threshold"] if mid in settings else 1
            gate = held_back(event, monitor, threshold)
            # The parent may still be confirming its own outage (its round can close after
            # the child's): hold until release_parent_held sees its verdict.
            for_parent = has_parent and event["kind"] in GATED_EVENTS
            if event["kind"] in GATED_EVENTS and (mid in settings or has_parent):
                held[mid] = gate or for_parent
            hold = store.PARENT if for_parent else None
            new = self._deliveries(event, rules, monitor, channels, flapping, gate or for_parent, hold)
            if event["kind"] == DIAGNOSED:
                new = follow_opening(new, await self._opened_on(event, rows))
            rows += new
        rows = await self._group(rows)
        created = await store.insert_deliveries(self.pool, rows)
        if self.subscribers is not None:
            created += await store.insert_notices(
                self.pool, await self.subscribers.notices(self.pool, events)
            )
        safe = self._safe_watermark(last, [e["id"] for e in events], now)
        if safe > last and await store.advance_watermark(self.pool, last, safe):
            log.debug("fan-out watermark=%s deliveries=%s", safe, created)
        return created

    async def _opened_on(
        self, event: dict[str, Any], rows: list[NewDelivery]
    ) -> dict[int, tuple[str, str | None]]:
        """Channel -> (delivery status, hold reason) of the opening this
        incident.diagnosed updates, where it went, is going or waits to go out: stored
        deliveries, or rows of this same fan-out."""
        opened_id = event["payload"].get("opened_event_id")
        if not isinstance(opened_id, int):
            return {}
        states = await store.opening_states(self.pool, opened_id, OPENING_SENT + OPENING_WAITING)
        for r in rows:
            wanted = OPENING_SENT + OPENING_WAITING
            if r.event_id == opened_id and r.kind == "event" and r.status in wanted and r.channel_id:
                states[r.channel_id] = (r.status, r.hold_reason)
        return states

    async def _unalerted(
        self, monitor_id: int, event_id: int, held: dict[int, bool], now: dt.datetime
    ) -> bool:
        """For a recovery event: was the outage it ends held back by alert_threshold? Then
        its held notices are cancelled and the recovery is not sent either."""
        if monitor_id in held:  # the outage was fanned out in this batch (monitor.up, then incident.resolved)
            unalerted = held[monitor_id]
        else:
            unalerted = await store.outage_unalerted(self.pool, monitor_id, event_id)
        if unalerted:
            await store.cancel_held(self.pool, monitor_id, event_id, now)
        return unalerted

    async def judge_flapping(self, ids: list[int], now: dt.datetime) -> dict[int, bool]:
        """Whether each monitor with rounds is flapping now (flap_percent over its last
        flap_results verdicts, with hysteresis); a change is stored with compare-and-set and
        announced by one monitor.flapping event. Monitors without rounds are left out."""
        if not ids:
            return {}
        verdicts = await store.recent_verdicts(self.pool, ids, self.settings.flap_results)
        before = await store.flap_states(self.pool, list(verdicts))
        out: dict[int, bool] = {}
        for mid, states in verdicts.items():
            percent = flap_percent(states, self.settings.flap_results)
            out[mid] = is_flapping(before.get(mid, False), percent, self.settings)
            if out[mid] == before.get(mid, False):
                continue  # no change: nothing to write (a monitor that never flapped has no row)
            async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
                if not await store.set_flapping(conn, mid, out[mid], percent, now):
                    continue
                await event_store.insert(
                    conn,
                    "monitor.flapping",
                    monitor_id=mid,
                    incident_id=None,
                    occurred_at=now,
                    payload={"monitor": {"id": mid}, "flapping": out[mid], "percent": round(percent, 1)},
                )
            log.info("monitor flapping monitor_id=%s flapping=%s percent=%.1f", mid, out[mid], percent)
        return out

    async def release_flaps(self, now: dt.datetime) -> int:
        """Judge again the monitors that are flapping or have suppressed notices; release
        the notices of those that settled (the newest per channel, the rest collapsed)."""
        watched = await store.flap_states(self.pool)
        judged = await self.judge_flapping(list(watched), now)
        settled = [m for m, f in judged.items() if not f]
        return await store.release_settled(self.pool, now, settled) if settled else 0

    def _deliveries(
        self,
        event: dict[str, Any],
        rules: list[dict[str, Any]],
        monitor: dict[str, Any] | None,
        channels: dict[int, dict[str, Any]],
        flapping: set[int],
        held: bool = False,
        hold_reason: str | None = None,
    ) -> list[NewDelivery]:
        if event["kind"] not in NOTIFIABLE:
            return []
        status = "suppressed" if event["monitor_id"] in flapping else ("held" if held else "pending")
        at: dt.datetime = event["occurred_at"]
        mid, iid, eid = event["monitor_id"], event["incident_id"], event["id"]
        reason = hold_reason if status == "held" else None
        out = []
        for cid, route in routes_for(event, rules, monitor, channels).items():
            key = None
            if route.group is not None and status in ("pending", "held"):
                key = group_key(event, monitor, route.group[0])
                if key is not None:
                    self._windows[(eid, cid)] = route.group[1]
                elif regroup_recovery(event, channels[cid]):
                    self._windows[(eid, cid)] = route.group[1]
                    self._recoveries[(eid, cid)] = (mid, event["kind"])
            out.append(NewDelivery(eid, cid, "event", 0, mid, iid, status, at, route.reminder_s, reason, key))
        for cid, (delay, reminder_s) in escalations_for(event, rules, monitor, channels).items():
            due = at + dt.timedelta(seconds=delay)
            out.append(
                NewDelivery(
                    eid,
                    cid,
                    "escalation",
                    1,
                    mid,
                    iid,
                    "held" if held else "pending",
                    due,
                    reminder_s,
                    hold_reason if held else None,
                )
            )
        return out

    async def _group(self, rows: list[NewDelivery]) -> list[NewDelivery]:
        """Leaders and members: the first delivery of a (channel, group key) with no leader
        still collecting waits its window (next_attempt_at + window) and leads; the rest
        are 'grouped' under it and listed when it is sent."""
        rows = await self._recovery_groups(rows)
        keyed = [r for r in rows if r.group_key is not None]
        windows, self._windows = self._windows, {}
        if not keyed:
            return rows
        leaders = await store.open_leaders(
            self.pool,
            list({(r.channel_id, r.group_key) for r in keyed if r.group_key}),
            min(r.next_attempt_at for r in keyed),
        )
        out = []
        members: set[int] = set()
        for row in rows:
            if row.group_key is None:
                out.append(row)
            elif (row.channel_id, row.group_key) in leaders:
                out.append(row._replace(status="grouped", hold_reason=None))
                members.add(row.event_id or 0)
            else:
                leaders.add((row.channel_id, row.group_key))
                window = dt.timedelta(seconds=windows.get((row.event_id or 0, row.channel_id), 0))
                out.append(row._replace(next_attempt_at=row.next_attempt_at + window))
        # One escalation per group: the leader's; a member's would page once per monitor.
        return [r for r in out if not (r.kind == "escalation" and r.event_id in members)]

    async def _recovery_groups(self, rows: list[NewDelivery]) -> list[NewDelivery]:
        """Give a recovery the key of its outage's group, as `recovery kind|outage key`,
        when that outage went out grouped on the same channel; `_group` then makes the
        recoveries within the window one notice, as it does for the outages."""
        recoveries, self._recoveries = self._recoveries, {}
        if not recoveries:
            return rows
        wanted = [(eid, cid, mid, kind) for (eid, cid), (mid, kind) in recoveries.items()]
        outage = await store.outage_groups(self.pool, wanted)
        out = []
        for row in rows:
            key = outage.get((row.event_id or 0, row.channel_id)) if row.kind == "event" else None
            if key is not None:
                kind = recoveries[(row.event_id or 0, row.channel_id)][1]
                row = row._replace(group_key=f"{kind}|{key.split('|', 1)[1]}")
            out.append(row)
        return out

    def _safe_watermark(self, last: int, ids: list[int], now: dt.datetime) -> int:
        """The highest id with no unexplained gap below it.

        bigserial ids are taken at insert but become visible at commit, so id 11 can be
        visible while id 10's transaction is still open. A gap holds the watermark (the
        events after it were fanned out already and are harmlessly fanned out again)
        until it is older than gap_wait_s: then it is a rolled-back insert and skipped.
        """
        safe = last
        for event_id in ids:
            if event_id == safe + 1:
                safe = event_id
                continue
            if self._gap is None or self._gap[0] != safe + 1:
                self._gap = (safe + 1, now)
            if (now - self._gap[1]).total_seconds() < self.settings.gap_wait_s:
                return safe
            safe = event_id
        return safe

    async def release_parent_held(self, now: dt.datetime) -> int:
        """Decide the deliveries held for a parent's verdict (store.release_parent_held);
        the incidents of children whose parent is down become suppressed, in the same
        transaction, so their recovery notifies nobody either."""
        async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
            released, suppressed = await store.release_parent_held(conn, now)
            for incident_id, parent in {(r["incident_id"], r["parent_id"]) for r in suppressed}:
                if incident_id is not None and await incident_store.suppress(conn, incident_id, parent, now):
                    await incident_store.add_timeline(
                        conn,
                        incident_id,
                        now,
                        "suppressed",
                        f"parent monitor {parent} is down",
                        {"suppressed": True, "cause_monitor_id": parent},
                    )
        if suppressed:
            log.info("held for parent, suppressed deliveries=%s", len(suppressed))
        return released + len(suppressed)

    # ---------------------------------------------------------------- send

    async def process_batch(self, now: dt.datetime, limit: int | None = None) -> int:
        """Claim due deliveries, send them concurrently, record outcomes; returns how many."""
        claimed = await store.claim(
            self.pool,
            now,
            self.settings.lease_s,
            limit or self.settings.batch,
            subscribers=self.subscribers is not None,
        )
        if not claimed:
            return 0
        to_channels = [d for d in claimed if d["channel_id"] is not None]
        events = await store.events_by_id(self.pool, [d["event_id"] for d in to_channels if d["event_id"]])
        channels = await store.channels_by_id(self.pool, list({d["channel_id"] for d in to_channels}))
        conditional = [
            d["incident_id"]
            for d in claimed
            if d["incident_id"] is not None
            and (
                d["kind"] in ("reminder", "escalation")
                or channels.get(d["channel_id"], {}).get("kind") in KEYED_CHANNELS
            )
        ]
        incidents = await store.incident_status(self.pool, conditional) if conditional else {}
        recipients = await self._recipients(to_channels, channels)
        subscriber_ids = list({d["subscriber_id"] for d in claimed if d["subscriber_id"] is not None})
        targets = {}
        if self.subscribers is not None and subscriber_ids:
            targets = await self.subscribers.targets(self.pool, subscriber_ids)
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(d: dict[str, Any]) -> tuple[Outcome, NotifierError | None]:
            async with gate:
                if d["subscriber_id"] is not None:
                    return await self._notify(d, targets.get(d["subscriber_id"]), now), None
                channel = channels.get(d["channel_id"])
                if channel is not None and d["monitor_id"] in recipients:
                    channel = {**channel, "config": {**channel["config"], "to": recipients[d["monitor_id"]]}}
                return await self._attempt(d, events.get(d["event_id"] or 0), channel, incidents, now)

        for d in to_channels:  # a leader of a group lists its members
            if d["group_key"] and d["kind"] == "event":
                ids = await store.take_members(self.pool, d["id"], d["channel_id"], d["group_key"])
                found = await store.events_by_id(self.pool, ids)
                d["members"] = [found[i] for i in ids if i in found]

        # An update claimed with its opening on the same channel (both released from a
        # hold at once) is sent after the opening's attempt, so it never arrives first.
        here = {(d["channel_id"], d["event_id"]) for d in to_channels}
        first = [d for d in claimed if _update_of(d, events) not in here]
        claimed = first + [d for d in claimed if _update_of(d, events) in here]
        results = list(await asyncio.gather(*(one(d) for d in first)))
        results += await asyncio.gather(*(one(d) for d in claimed[len(first) :]))
        permanent = [(o, e) for o, e in results if e is not None and e.permanent]
        await store.record(self.pool, [o for o, e in results if e is None or not e.permanent], now)
        for outcome, error in permanent:
            delivery = next(d for d in claimed if d["id"] == outcome.id)
            await self._disable(delivery, outcome, error.message, now)
        await self._next_reminders(claimed, results, events, now)
        return len(claimed)

    async def _recipients(
        self, claimed: list[dict[str, Any]], channels: dict[int, dict[str, Any]]
    ) -> dict[int, list[str]]:
        """Monitor id -> its own email recipients (alert settings), for email channels."""
        mailed = [
            d["monitor_id"]
            for d in claimed
            if d["monitor_id"] and channels.get(d["channel_id"], {}).get("kind") == "email"
        ]
        settings = await store.alert_settings(self.pool, mailed)
        return {
            m: list(a["email_recipients"])
            for m, a in settings.items()
            if a["email_enabled"] and a["email_recipients"]
        }

    async def process_one(self, now: dt.datetime) -> bool:
        """Claim, send and record at most one delivery."""
        return await self.process_batch(now, limit=1) > 0

    async def _attempt(
        self,
        d: dict[str, Any],
        event: dict[str, Any] | None,
        channel: dict[str, Any] | None,
        incidents: dict[int, str],
        now: dt.datetime,
    ) -> tuple[Outcome, NotifierError | None]:
        started: float | None = None

        def done(status: str, error: str | None = None, at: dt.datetime | None = None) -> Outcome:
            return _outcome(d, status, error, at, started)

        if channel is None or not channel["is_enabled"]:
            reason = channel["disabled_reason"] if channel else None
            return done("cancelled", f"channel disabled: {reason or 'by a user'}"), None
        if event is None:
            return done("cancelled", "event no longer exists"), None
        if d["kind"] in ("reminder", "escalation") and incidents.get(d["incident_id"]) != "active":
            return done("cancelled", "incident acknowledged or resolved"), None
        if (
            channel["kind"] in KEYED_CHANNELS
            and event["kind"] in TRIGGER_EVENTS
            and incidents.get(d["incident_id"]) == "resolved"
        ):
            return done("cancelled", "incident already resolved: a trigger now would open a new alert"), None
        start_attempt()
        started = time.perf_counter()
        note = notification(event, d, self.base_url)
        if d.get("members"):
            members = [notification(m, d) for m in d["members"]]
            note.group = [m.monitor for m in members]
            # A grouped diagnosis: each monitor's lines, named.
            if note.diagnostics:
                note.diagnostics = [f"{note.monitor.name} {line}" for line in note.diagnostics]
            note.diagnostics += [f"{m.monitor.name} {line}" for m in members for line in m.diagnostics]
        try:
            await send(self.session, channel, note)
        except NotifierError as e:
            metrics.NOTIFICATIONS.labels(channel["kind"], "permanent" if e.permanent else "failed").inc()
            log.warning(
                "delivery failed delivery_id=%s channel_id=%s kind=%s attempt=%s permanent=%s error=%s",
                d["id"],
                d["channel_id"],
                channel["kind"],
                d["attempts"],
                e.permanent,
                e.message,
            )
            if e.permanent:
                return done("dead", e.message), e
            if d["attempts"] >= self.settings.max_attempts:
                return done("dead", f"gave up after {d['attempts']} attempts: {e.message}"), None
            wait = backoff(d["attempts"], self.settings, e.retry_after, self.rng)
            return done("failed", e.message, now + dt.timedelta(seconds=wait)), e
        metrics.NOTIFICATIONS.labels(channel["kind"], "delivered").inc()
        return done("delivered"), None

    async def _notify(self, d: dict[str, Any], target: Any, now: dt.datetime) -> Outcome:
        """Send one notice to a status-page subscriber. A failure is retried with the same
        backoff as a channel's; a permanent one, or the last attempt, ends it (dead), and
        nothing is disabled: the next notice to this subscriber is tried as usual."""
        if target is None or self.subscribers is None:
            return _outcome(d, "cancelled", "subscriber no longer exists")
        start_attempt()
        started = time.perf_counter()
        try:
            await self.subscribers.send(target, d)
        except NotifierError as e:
            log.warning(
                "notice failed delivery_id=%s subscriber_id=%s kind=%s attempt=%s permanent=%s error=%s",
                d["id"],
                d["subscriber_id"],
                d["kind"],
                d["attempts"],
                e.permanent,
                e.message,
            )
            if e.permanent or d["attempts"] >= self.settings.max_attempts:
                metrics.STATUS_NOTICES.labels("failed").inc()
                reason = e.message if e.permanent else f"gave up after {d['attempts']} attempts: {e.message}"
                return _outcome(d, "dead", reason, started=started)
            metrics.STATUS_NOTICES.labels("retry").inc()
            wait = backoff(d["attempts"], self.settings, e.retry_after, self.rng)
            return _outcome(d, "failed", e.message, now + dt.timedelta(seconds=wait), started)
        metrics.STATUS_NOTICES.labels("sent").inc()
        return _outcome(d, "delivered", started=started)

    async def _disable(self, d: dict[str, Any], outcome: Outcome, reason: str, now: dt.datetime) -> None:
        """Dead delivery, disabled channel and a channel.disabled event, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[union-attr]
            if not await store.record(conn, [outcome], now):
                return
            channel = await store.disable_channel(conn, d["channel_id"], reason, now)
            if channel is None:
                return
            await event_store.insert(
                conn,
                "channel.disabled",
                monitor_id=None,
                incident_id=None,
                occurred_at=now,
                payload={
                    "channel": {"id": channel["id"], "name": channel["name"], "kind": channel["kind"]},
                    "reason": reason,
                    "delivery_id": d["id"],
                    "event_id": d["event_id"],
                },
            )
        log.warning(
            "channel disabled channel_id=%s kind=%s reason=%s", channel["id"], channel["kind"], reason
        )

    async def _next_reminders(
        self,
        claimed: list[dict[str, Any]],
        results: list[tuple[Outcome, Any]],
        events: dict[int, dict[str, Any]],
        now: dt.datetime,
    ) -> None:
        """After a delivered notice of an open incident, schedule the next reminder."""
        rows = []
        for d, (outcome, _) in zip(claimed, results, strict=True):
            event = events.get(d["event_id"] or 0)
            if outcome.status != "delivered" or not d["reminder_s"] or event is None:
                continue
            if event["kind"] != "incident.opened" or d["incident_id"] is None:
                continue
            start: dt.datetime = event["occurred_at"]
            if d["kind"] == "escalation":
                start = d["next_attempt_at"]
            period = d["reminder_s"]
            seq = (
                max(d["seq"] if d["kind"] == "reminder" else 0, int((now - start).total_seconds() // period))
                + 1
            )
            due = start + dt.timedelta(seconds=seq * period)
            # A reminder chain after an escalation counts from 1000 so it never meets the
            # first chain's keys; both stop when the incident is acknowledged.
            offset = 1000 if d["kind"] == "escalation" or d["seq"] >= 1000 else 0
            rows.append(
                NewDelivery(
                    d["event_id"],
                    d["channel_id"],
                    "reminder",
                    seq + offset,
                    d["monitor_id"],
                    d["incident_id"],
                    "pending",
                    due,
                    period,
                )
            )
        await store.insert_deliveries(self.pool, rows)

    # ---------------------------------------------------------------- test and loop

    async def send_test(self, channel: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        """Send a test notification now; record it as a 'test' delivery; the outcome."""
        delivery_id = await store.insert_test_delivery(self.pool, channel["id"], now)
        error: NotifierError | None = None
        start_attempt()
        started = time.perf_counter()
        try:
            await send(self.session, channel, test_notification(delivery_id, now))
        except NotifierError as e:
            error = e
        status = "delivered" if error is None else "dead"
        outcome = _outcome(
            {"id": delivery_id, "attempts": 1}, status, error.message if error else None, None, started
        )
        await store.record(self.pool, [outcome], now)
        return {
            "delivery_id": delivery_id,
            "delivered": error is None,
            "status": status,
            "error": error.message if error else None,
            "permanent": error.permanent if error else None,
        }

    async def step(self, now: dt.datetime) -> int:
        """Fan out one batch, release settled flaps, send one batch: the loop body."""
        created = await self.fan_out(now)
        await store.release_suppressed(self.pool, now, dt.timedelta(seconds=self.settings.flap_window_s))
        await self.release_flaps(now)
        await self.release_parent_held(now)
        await store.release_held(self.pool, now)
        sent = await self.process_batch(now)
        return created + sent

    async def run(self, stop: asyncio.Event) -> None:
        """Step until `stop`; when a step finds nothing, sleep until an events NOTIFY or
        the poll (`idle_wait`: the fallback for a lost LISTEN connection, retries, reminders
        and holds)."""
        listener = await self._listen()
        outage = Outage("dispatcher")
        empty = 0
        try:
            while not stop.is_set():
                if listener is not None and _closed(listener):  # the database restarted
                    await self._unlisten(listener)
                    listener = await self._listen()
                self._wake.clear()  # events committed during the step wake the next sleep
                busy = 0
                try:
                    busy = await self.step(dt.datetime.now(dt.UTC))
                except Exception as e:
                    if db.unavailable(e):  # logged once per outage; retried after poll_s
                        outage.failed(e)
                    else:
                        log.warning("dispatcher step failed error=%s", type(e).__name__ + ": " + str(e)[:200])
                else:
                    outage.succeeded()
                empty = 0 if busy else empty + 1
                if not busy:
                    quiet = listener is not None and not await self._waiting()
                    await self._sleep(stop, idle_wait(self.settings, empty, listening=quiet))
        finally:
            await self._unlisten(listener)

    async def _waiting(self) -> bool:
        """Whether something comes due by time within the idle poll (True if unknown)."""
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.settings.poll_idle_s)
        try:
            return await store.waiting(self.pool, soon)
        except Exception:  # the database is away: the step's own failure is logged
            return True

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        done, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if waits[1] in done and not stop.is_set():
            metrics.DISPATCHER_WAKEUPS.inc()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> Any:
        """A pool connection LISTENing on EVENTS_CHANNEL; None (poll only) when that fails."""
        if not isinstance(self.pool, asyncpg.Pool):
            return None
        conn = None
        try:
            conn = await self.pool.acquire()
            await conn.add_listener(EVENTS_CHANNEL, self._notified)
            return conn
        except (asyncpg.PostgresError, OSError) as e:
            log.warning("dispatcher cannot LISTEN, polling only error=%s", e)
            if conn is not None:
                await self.pool.release(conn)
            return None

    async def _unlisten(self, conn: Any) -> None:
        if conn is None or not isinstance(self.pool, asyncpg.Pool):
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(EVENTS_CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)


def idle_wait(settings: Settings, empty: int, *, listening: bool) -> float:
    """Seconds to sleep after `empty` steps in a row found nothing: `poll_s`, doubling up to
    `poll_idle_s` while a LISTEN connection wakes the loop for new events and nothing comes
    due by time (`listening`; without a LISTEN the poll is how new events are found: always
    `poll_s`)."""
    if not listening or empty <= 1:
        return settings.poll_s
    return max(settings.poll_s, min(settings.poll_s * 2 ** (empty - 1), settings.poll_idle_s))


def _closed(conn: Any) -> bool:
    """Whether a LISTEN connection is gone: closed, or taken back by the pool (which asyncpg
    does to the connections of a server that shut down, and then refuses `is_closed`)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True
