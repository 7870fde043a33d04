"""Multi-location consensus: a pure function from one round's results to a verdict.

No I/O here. Regions that did not answer (or skipped the job) are left out of the
vote; if none answered the verdict is `unknown`: the fleet, not the target, failed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Literal

import msgspec

Mode = Literal["any", "majority", "all", "quorum"]
State = Literal["up", "down", "degraded", "unknown"]
MODES: tuple[str, ...] = ("any", "majority", "all", "quorum")


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode = "majority"
    quorum: int | None = None


class RegionResult(msgspec.Struct, frozen=True, kw_only=True):
    region: str
    status: str  # ok | degraded | fail | skipped
    reason: str | None = None
    message: str = ""
    duration_ms: float = 0.0


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    state: State
    failing: tuple[str, ...] = ()
    passing: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str | None = None
    message: str = ""
    response_time_ms: float | None = None


def _down(failing: int, answered: int, rule: Rule) -> bool:
    match rule.mode:
        case "any":
            return failing >= 1
        case "all":
            return failing == answered
        case "quorum":
            return failing >= max(1, rule.quorum or 1)
        case _:
            return failing * 2 > answered


def decide(results: list[RegionResult], expected: list[str], rule: Rule) -> Verdict:
    """The round's verdict from the regions that answered."""
    by_region = {r.region: r for r in results if r.status != "skipped"}
    answered = [by_region[r] for r in expected if r in by_region]
    missing = tuple(r for r in expected if r not in by_region)
    if not answered:
        # Regions that skipped say why (no_capable_probe, deadline_passed): the most common.
        skipped = [r for r in results if r.status == "skipped" and r.reason and r.region in expected]
        if skipped:
            why, _ = Counter(r.reason for r in skipped).most_common(1)[0]
            first = next(r for r in skipped if r.reason == why)
            return Verdict(state="unknown", missing=missing, reason=why, message=first.message)
        return Verdict(state="unknown", missing=missing, message="no region answered")
    failing = tuple(r.region for r in answered if r.status == "fail")
    passing = tuple(r.region for r in answered if r.status != "fail")
    bad = [r for r in answered if r.status != "ok"]
    reason, message = None, ""
    if bad:
        reason, _ = Counter(r.reason for r in bad).most_common(1)[0]
        message = next(r.message for r in bad if r.reason == reason)
    ok_times = [r.duration_ms for r in answered if r.status != "fail"]
    rtt = statistics.median(ok_times) if ok_times else None
    if _down(len(failing), len(answered), rule):
        state: State = "down"
    elif sum(r.status == "degraded" for r in answered) * 2 > len(answered):
        state = "degraded"
    else:
        state = "up"
    return Verdict(
        state=state,
        failing=failing,
        passing=passing,
        missing=missing,
        reason=reason,
        message=message,
        response_time_ms=rtt,
    )
