"""Apply round verdicts to monitor state through thresholds, with compare-and-set.

`transition` is pure: current state and streaks plus a verdict in, the new state out.
`apply` writes it only if no later round was applied first (CAS on last_round), so two
controllers closing rounds of one monitor cannot move it backwards.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from controller.consensus import Verdict
from controller.storage import Tx


class MonitorState(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # pending | up | down | degraded | unknown | paused
    fail_streak: int = 0
    pass_streak: int = 0


def transition(current: MonitorState, verdict: Verdict, *, retry_count: int,
               recovery_count: int) -> MonitorState:  # fmt: skip
    """Down after retry_count+1 failing rounds; back up after recovery_count passing ones."""
    if verdict.state == "unknown":
        return MonitorState(status="unknown" if current.status in ("pending", "unknown")
                            else current.status, fail_streak=current.fail_streak,
                            pass_streak=current.pass_streak)  # fmt: skip
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


async def apply(conn: Tx, monitor: dict[str, Any], due: dt.datetime,
                verdict: Verdict, now: dt.datetime) -> MonitorState | None:  # fmt: skip
    """Write the verdict's effect on the monitor; None if a later round got there first."""
    current = MonitorState(status=monitor["status"], fail_streak=monitor["fail_streak"],
                           pass_streak=monitor["pass_streak"])  # fmt: skip
    if current.status == "paused":
        return None
    new = transition(current, verdict, retry_count=monitor["retry_count"],
                     recovery_count=monitor["recovery_count"])  # fmt: skip
    answered = verdict.state != "unknown"
    row = await conn.fetchrow(
        "UPDATE monitors SET status = $3, fail_streak = $4, pass_streak = $5, last_round = $2,"
        " status_changed_at = CASE WHEN status <> $3 THEN $6 ELSE status_changed_at END,"
        " last_check = CASE WHEN $7 THEN $6 ELSE last_check END,"
        " last_success = CASE WHEN $8 THEN $6 ELSE last_success END,"
        " last_failure = CASE WHEN $9 THEN $6 ELSE last_failure END,"
        " response_time_ms = COALESCE($10, response_time_ms)"
        " WHERE id = $1 AND status <> 'paused' AND (last_round IS NULL OR last_round < $2)"
        " RETURNING id",
        monitor["id"], due, new.status, new.fail_streak, new.pass_streak, now, answered,
        verdict.state in ("up", "degraded"), verdict.state == "down", verdict.response_time_ms,
    )  # fmt: skip
    return new if row else None
