"""Apply round verdicts to monitor state through thresholds, with compare-and-set, and
record what changed: incidents, their timeline and events, in the same transaction.

`transition` and `needs_recheck` are pure. `apply` writes the new state only if no
later round was applied first (CAS on last_round), so two controllers closing rounds of
one monitor cannot move it backwards; incidents open through a unique partial index,
so an outage has one incident whichever controller saw it first.

Suppression: inside a maintenance window a status change writes no monitor.* event and
opens no incident. While the parent monitor is down, a child's outage opens an incident
with `cause_monitor_id` = parent and `suppressed` = true and writes no monitor.down nor
incident.opened event (and, on recovery, no monitor.up nor incident.resolved event).
A child whose round closes before its parent's has its notices held by the dispatcher
until the parent's verdict, which may suppress its incident after the fact
(dispatcher.release_parent_held).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from probefleet.controller.engine.consensus import Verdict
from probefleet.controller.monitors import maintenance
from probefleet.controller.monitors.config import redact_url
from probefleet.controller.storage import Tx
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import incidents as store
from probefleet.controller.storage import monitors as monitor_store

MAX_RECHECKS = 3


class MonitorState(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # pending | up | down | degraded | unknown | paused
    fail_streak: int = 0
    pass_streak: int = 0


class Recheck(msgspec.Struct, frozen=True, kw_only=True):
    """A confirmation round to open at once: the monitor's row, attempt + 1, due now."""

    monitor: dict[str, Any]
    attempt: int


def transition(
    current: MonitorState, verdict: Verdict, *, retry_count: int, recovery_count: int
) -> MonitorState:
    """Down after retry_count+1 failing rounds; back up after recovery_count passing ones."""
    if verdict.state == "unknown":
        return MonitorState(
            status="unknown" if current.status in ("pending", "unknown") else current.status,
            fail_streak=current.fail_streak,
            pass_streak=current.pass_streak,
        )
    if verdict.state == "down":
        fails = current.fail_streak + 1
        status = "down" if fails > retry_count else current.status
        if status in ("pending", "unknown") and fails <= retry_count:
            status = "pending" if current.status == "pending" else "unknown"
        return MonitorState(status=status, fail_streak=fails, pass_streak=0)
    passes = current.pass_streak + 1
    if current.status == "down" and passes < recovery_count:
        return MonitorState(status="down", fail_streak=0, pass_streak=passes)
    return MonitorState(status=verdict.state, fail_streak=0, pass_streak=passes)


def unchecked(last_check: dt.datetime | None, due: dt.datetime, interval_s: float) -> bool:
    """Whether a monitor whose round had no answer has gone unchecked for more than two
    intervals (never answered counts as unchecked)."""
    return last_check is None or (due - last_check).total_seconds() > 2 * interval_s


def needs_recheck(
    verdict: Verdict, new: MonitorState, attempt: int, *, retry_count: int, recovery_count: int
) -> bool:
    """Whether to confirm this round's outcome at once instead of waiting an interval.

    A failing verdict below the threshold is re-checked until it confirms (at most
    retry_count times); a passing verdict with some failing region once, to see whether
    the failure spreads; a recovering monitor until it is confirmed up.
    """
    if attempt >= MAX_RECHECKS or verdict.state == "unknown":
        return False
    if verdict.state == "down":
        return new.status != "down" and attempt < retry_count
    if new.status == "down":
        return attempt < recovery_count - 1
    return bool(verdict.failing) and attempt == 0


# Which step of a check a failure reason belongs to, for the incident's region x phase
# matrix: the first phase a request passes through that can fail that way.
PHASES = ("dns", "connect", "tls", "response", "content", "timeout", "other")
PHASE_OF: dict[str, str] = {
    "dns_error": "dns",
    "rcode_mismatch": "dns",
    "answer_mismatch": "dns",
    "connection_refused": "connect",
    "connection_reset": "connect",
    "network_unreachable": "connect",
    "packet_loss": "connect",
    "no_response": "connect",
    "permission_denied": "connect",
    "tls_error": "tls",
    "cert_expired": "tls",
    "cert_expiring": "tls",
    "cert_invalid": "tls",
    "cert_revoked": "tls",
    "hostname_mismatch": "tls",
    "issuer_mismatch": "tls",
    "protocol_mismatch": "tls",
    "starttls_unavailable": "tls",
    "status_mismatch": "response",
    "too_many_redirects": "response",
    "header_mismatch": "response",
    "protocol_error": "response",
    "auth_failed": "response",
    "not_serving": "response",
    "keyword_missing": "content",
    "keyword_present": "content",
    "json_mismatch": "content",
    "graphql_error": "content",
    "response_mismatch": "content",
    "value_mismatch": "content",
    "query_failed": "content",
    "element_missing": "content",
    "timeout": "timeout",
    "deadline_passed": "timeout",
    "slow_response": "timeout",
    "latency_exceeded": "timeout",
}


def phase_matrix(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Region x phase: how many failed results each region had at each step, from
    (region, reason, failures) rows; the phases in the order a request meets them."""
    regions: dict[str, dict[str, int]] = {}
    for row in rows:
        phase = PHASE_OF.get(row["reason"] or "", "other")
        cell = regions.setdefault(row["region"], {})
        cell[phase] = cell.get(phase, 0) + int(row["failures"])
    used = {p for cells in regions.values() for p in cells}
    return {"phases": [p for p in PHASES if p in used], "regions": dict(sorted(regions.items()))}


def target_of(kind: str, spec: dict[str, Any] | None) -> str:
    spec = spec or {}
    if "url" in spec:
        return redact_url(str(spec["url"]), spec.get("secret_params") or ())
    host = str(spec.get("host", ""))
    return f"{host}:{spec['port']}" if spec.get("port") else host


def iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if t else None


def monitor_payload(m: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": m["id"],
        "name": m.get("name"),
        "type": m.get("kind"),
        "target": target_of(m.get("kind", ""), m.get("spec")),
        "status": status,
        "locations": list(m.get("locations") or []),
    }


def incident_payload(i: dict[str, Any]) -> dict[str, Any]:
    end = i["resolved_at"]
    return {
        "id": i["id"],
        "status": i["status"],
        "severity": i["severity"],
        "title": i["title"],
        "started_at": iso(i["started_at"]),
        "resolved_at": iso(end),
        "duration_s": (end - i["started_at"]).total_seconds() if end else None,
        "root_cause": i["root_cause"],
        "affected_regions": list(i["affected_regions"]),
        "checks_failed": i["checks_failed"],
        "checks_total": i["checks_total"],
    }


def check_payload(verdict: Verdict) -> dict[str, Any] | None:
    region = (verdict.failing or verdict.passing or (None,))[0]
    if region is None:
        return None
    failing = region in verdict.failing
    return {
        "region": region,
        "status": "fail" if failing else "ok",
        "reason": verdict.reason if failing else None,
        "message": verdict.message if failing else "",
        "response_time_ms": verdict.response_time_ms,
        "status_code": None,
    }


async def emit(
    conn: Tx,
    kind: str,
    now: dt.datetime,
    *,
    monitor: dict[str, Any] | None = None,
    status: str | None = None,
    incident: dict[str, Any] | None = None,
    verdict: Verdict | None = None,
    previous: str | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Write one outbox row (call inside the transaction of the change)."""
    payload: dict[str, Any] = dict(extra or {})
    if monitor is not None:
        payload["monitor"] = monitor_payload(monitor, status or monitor.get("status", ""))
    if incident is not None:
        payload["incident"] = incident_payload(incident)
    if verdict is not None and (check := check_payload(verdict)) is not None:
        payload["check"] = check
    if previous is not None:
        payload["previous_status"] = previous
    return await event_store.insert(
        conn,
        kind,
        monitor_id=monitor["id"] if monitor else None,
        incident_id=incident["id"] if incident else None,
        occurred_at=now,
        payload=payload,
    )


async def apply(
    conn: Tx,
    monitor: dict[str, Any],
    due: dt.datetime,
    verdict: Verdict,
    now: dt.datetime,
    windows: list[maintenance.Window] | None = None,
    expected: Sequence[str] | None = None,
) -> MonitorState | None:
    """Write the verdict's effect on the monitor; None if a later round got there first.

    `windows`: every enabled maintenance window, when the caller read them once for a
    whole batch; otherwise this monitor's are read here. `expected`: the round's regions
    (None: all of the monitor's locations)."""
    current = MonitorState(
        status=monitor["status"], fail_streak=monitor["fail_streak"], pass_streak=monitor["pass_streak"]
    )
    if current.status == "paused":
        return None
    new = transition(
        current, verdict, retry_count=monitor["retry_count"], recovery_count=monitor["recovery_count"]
    )
    if verdict.state == "unknown" and new.status in ("up", "degraded"):
        # Nobody has checked it for two intervals (no live capable probe anywhere, or no
        # answer): it is not "up". No incident and no down notice: the fleet, not the
        # target, is the problem, and region.unavailable already tells the operator.
        last = await store.last_check(conn, monitor["id"])
        if unchecked(last, due, monitor["interval_s"]):
            new = MonitorState(status="unknown", fail_streak=new.fail_streak, pass_streak=new.pass_streak)
    answered = verdict.state != "unknown"
    fail_since = monitor.get("fail_since")
    if verdict.state == "down":
        fail_since = fail_since if current.fail_streak > 0 and fail_since else due
    elif verdict.state != "unknown" and new.status != "down":
        fail_since = None
    voted = set(verdict.failing) | set(verdict.passing)
    unavailable = unavailable_regions(monitor, expected)
    written = await monitor_store.apply_verdict(
        conn,
        monitor["id"],
        due,
        status=new.status,
        fail_streak=new.fail_streak,
        pass_streak=new.pass_streak,
        now=now,
        answered=answered,
        passed=verdict.state in ("up", "degraded"),
        failed=verdict.state == "down",
        response_time_ms=verdict.response_time_ms,
        fail_since=fail_since,
        unavailable_regions=unavailable,
    )
    if not written:
        return None
    await _regions_changed(conn, monitor, list(monitor.get("unavailable_regions") or []), unavailable, now)
    monitor.update(fail_since=fail_since, unavailable_regions=unavailable)
    tags = list(monitor.get("tags") or [])
    if windows is None:
        windows = [maintenance.from_row(w) for w in await store.windows_for(conn, monitor["id"], tags)]
    occurrences = maintenance.active(windows, now, monitor["id"], tags)
    for occ in occurrences:
        await store.record_period(conn, monitor["id"], occ.window_id, occ.starts_at, occ.ends_at)
    open_incident = None
    if verdict.state == "down" or new.status != current.status:
        open_incident = await store.open_for(conn, monitor["id"])
    if open_incident is not None and not open_incident["manual"] and verdict.state == "down":
        await store.add_checks(conn, open_incident["id"], list(verdict.failing), len(voted))
    if new.status != current.status:
        await _status_changed(
            conn,
            monitor,
            current.status,
            new.status,
            verdict,
            now,
            in_maintenance=bool(occurrences),
            open_incident=open_incident,
        )
    return new


def is_quiet(
    monitor: dict[str, Any],
    verdict: Verdict,
    new: MonitorState,
    windows: list[maintenance.Window],
    now: dt.datetime,
    expected: Sequence[str] | None = None,
) -> bool:
    """A round whose only effect is fresh timestamps and streaks: the status stays, the
    verdict passes, the same regions answer and no maintenance window is open. Nearly
    every round is one; `results.write_verdicts` writes a batch of them in one statement."""
    if monitor["status"] in ("paused", "down") or new.status != monitor["status"]:
        return False
    if verdict.state not in ("up", "degraded"):
        return False
    if unavailable_regions(monitor, expected) != list(monitor.get("unavailable_regions") or []):
        return False
    return not maintenance.active(windows, now, monitor["id"], list(monitor.get("tags") or []))


def unavailable_regions(monitor: dict[str, Any], expected: Sequence[str] | None) -> list[str]:
    """The monitor's locations the round did not expect: the scheduler expects exactly the
    regions with a live probe (probe heartbeats, `Fleet`). A region whose probe is alive
    but whose answer is late or lost is not unavailable: a restart or a NATS outage
    delays answers without taking a region away."""
    if expected is None:
        return []
    return [r for r in monitor.get("locations") or [] if r not in expected]


async def _regions_changed(
    conn: Tx, monitor: dict[str, Any], before: list[str], after: list[str], now: dt.datetime
) -> None:
    """region.unavailable / region.available once per change, not per round."""
    for region in sorted(set(after) - set(before)):
        await emit(conn, "region.unavailable", now, monitor=monitor, extra={"region": region})
    for region in sorted(set(before) - set(after)):
        await emit(conn, "region.available", now, monitor=monitor, extra={"region": region})


async def _parent_down(conn: Tx, monitor: dict[str, Any]) -> int | None:
    parent = monitor.get("parent_id")
    if parent is None:
        return None
    return int(parent) if await monitor_store.status_of(conn, parent) == "down" else None


async def _status_changed(
    conn: Tx,
    monitor: dict[str, Any],
    old: str,
    new: str,
    verdict: Verdict,
    now: dt.datetime,
    *,
    in_maintenance: bool,
    open_incident: dict[str, Any] | None,
) -> None:
    parent = await _parent_down(conn, monitor) if new in ("down", "degraded") else None
    quiet = in_maintenance or parent is not None
    wants_incident = new == "down" or (new == "degraded" and monitor.get("incident_on_degraded"))
    if new in ("down", "degraded"):
        # The incident opens first so that monitor.down carries it: channels that key one
        # alert per incident (PagerDuty dedup_key, Opsgenie alias) then see one key for
        # both events of the outage, not a monitor key and then an incident key.
        opened = None
        if wants_incident and not in_maintenance and open_incident is None:
            opened = await _open(conn, monitor, new, verdict, now, parent)
        elif not wants_incident and open_incident is not None and not open_incident["manual"]:
            await _resolve(conn, monitor, open_incident, verdict, now, status=new)
        current = opened or (open_incident if wants_incident else None)
        if not quiet:
            await emit(
                conn,
                f"monitor.{new}",
                now,
                monitor=monitor,
                status=new,
                verdict=verdict,
                previous=old,
                incident=current,
            )
        if opened is not None and parent is None:
            await emit(
                conn, "incident.opened", now, monitor=monitor, status=new, incident=opened, verdict=verdict
            )
        return
    if new != "up":
        return
    resolved = None
    if open_incident is not None and not open_incident["manual"]:
        resolved = await _resolve(conn, monitor, open_incident, verdict, now, status="up")
    if old not in ("down", "degraded"):
        return
    notify = not resolved["suppressed"] if resolved else not in_maintenance
    if notify:
        await emit(
            conn,
            "monitor.up",
            now,
            monitor=monitor,
            status="up",
            verdict=verdict,
            previous=old,
            incident=resolved,
        )


async def _open(
    conn: Tx, monitor: dict[str, Any], status: str, verdict: Verdict, now: dt.datetime, parent: int | None
) -> dict[str, Any] | None:
    """Open the incident (and its timeline); the new row, or None if one was open already."""
    failing = list(verdict.failing)
    answered = len(verdict.failing) + len(verdict.passing)
    cause = f"{verdict.reason}: {verdict.message}" if verdict.reason else verdict.message or None
    if parent is not None:
        cause = f"parent monitor {parent} is down" + (f" ({cause})" if cause else "")
    severity = "medium" if status == "degraded" else ("critical" if not verdict.passing else "high")
    incident_id = await store.open_incident(
        conn,
        monitor_id=monitor["id"],
        title=f"{monitor.get('name', monitor['id'])} is {status}",
        severity=severity,
        started_at=monitor.get("fail_since") or now,
        root_cause=cause,
        root_reason=verdict.reason,
        affected_regions=sorted(failing),
        checks_failed=len(failing),
        checks_total=answered,
        suppressed=parent is not None,
        cause_monitor_id=parent,
    )
    if incident_id is None:
        return None
    await store.add_timeline(
        conn,
        incident_id,
        now,
        "opened",
        cause or "",
        {"suppressed": parent is not None, "cause_monitor_id": parent},
    )
    return await store.get(conn, incident_id)


async def _resolve(
    conn: Tx,
    monitor: dict[str, Any],
    incident: dict[str, Any],
    verdict: Verdict | None,
    now: dt.datetime,
    note: str = "recovered",
    *,
    status: str,
) -> dict[str, Any] | None:
    """Resolve; the incident.resolved event shows the monitor in its new `status` (the
    row still holds the old one)."""
    resolved = await store.resolve(conn, incident["id"], now)
    if resolved is None:
        return None
    await store.add_timeline(conn, incident["id"], now, "resolved", note)
    if not resolved["suppressed"]:
        await emit(
            conn, "incident.resolved", now, monitor=monitor, status=status, incident=resolved, verdict=verdict
        )
    return resolved
