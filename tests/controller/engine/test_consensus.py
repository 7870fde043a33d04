"""consensus.decide, incidents.transition and incidents.needs_recheck from tables."""

from __future__ import annotations

import pytest

from probefleet.controller.engine.consensus import RegionResult, Rule, Verdict, decide
from probefleet.controller.engine.incidents import MonitorState, needs_recheck, transition

R3 = ["us-east", "eu-west", "ap-south"]


def rr(region: str, status: str, reason: str | None = None, ms: float = 10.0) -> RegionResult:
    return RegionResult(region=region, status=status, reason=reason, message=reason or "", duration_ms=ms)


OK, FAIL = "ok", "fail"
DECIDE = [
    ("majority-one-of-three-fails", "majority", None, [OK, OK, FAIL], "up"),
    ("majority-two-of-three-fail", "majority", None, [OK, FAIL, FAIL], "down"),
    ("majority-tie-is-up", "majority", None, [OK, FAIL, None], "up"),
    ("any-one-fails", "any", None, [OK, OK, FAIL], "down"),
    ("all-two-of-three", "all", None, [OK, FAIL, FAIL], "up"),
    ("all-every-region", "all", None, [FAIL, FAIL, FAIL], "down"),
    ("all-of-the-answered", "all", None, [FAIL, FAIL, None], "down"),
    ("quorum-2-met", "quorum", 2, [OK, FAIL, FAIL], "down"),
    ("quorum-2-not-met", "quorum", 2, [OK, OK, FAIL], "up"),
    ("nobody-answered-is-unknown", "any", None, [None, None, None], "unknown"),
    ("skipped-is-not-an-answer", "any", None, ["skipped", "skipped", "skipped"], "unknown"),
    ("majority-degraded", "majority", None, ["degraded", "degraded", OK], "degraded"),
    ("minority-degraded-is-up", "majority", None, ["degraded", OK, OK], "up"),
]


@pytest.mark.parametrize(
    ("mode", "quorum", "statuses", "state"), [d[1:] for d in DECIDE], ids=[d[0] for d in DECIDE]
)
def test_it_decides_from_the_regions_that_answered(
    mode: str, quorum: int | None, statuses: list[str | None], state: str
) -> None:
    results = [rr(r, s, "http_status" if s == FAIL else None) for r, s in zip(R3, statuses, strict=True) if s]
    verdict = decide(results, R3, Rule(mode=mode, quorum=quorum))  # type: ignore[arg-type]
    assert verdict.state == state
    assert set(verdict.missing) == {r for r, s in zip(R3, statuses, strict=True) if s in (None, "skipped")}


def test_it_names_the_most_common_reason_as_root_cause() -> None:
    results = [
        rr("us-east", FAIL, "timeout"),
        rr("eu-west", FAIL, "refused"),
        rr("ap-south", FAIL, "timeout"),
    ]
    verdict = decide(results, R3, Rule())
    assert verdict.reason == "timeout" and verdict.failing == tuple(R3)


def test_a_round_no_region_could_run_is_unknown_with_the_skip_reason() -> None:
    results = [
        rr("us-east", "skipped", "no_capable_probe"),
        rr("eu-west", "skipped", "no_capable_probe"),
        rr("ap-south", "skipped", "deadline_passed"),
    ]
    verdict = decide(results, R3, Rule(mode="any"))
    assert (verdict.state, verdict.reason, verdict.missing) == ("unknown", "no_capable_probe", tuple(R3))
    # One region that could run it decides alone; the others are left out of the vote.
    verdict = decide([*results[:2], rr("ap-south", FAIL, "timeout")], R3, Rule(mode="all"))
    assert (verdict.state, verdict.failing, verdict.missing) == (
        "down",
        ("ap-south",),
        ("us-east", "eu-west"),
    )


def v(state: str, failing: tuple[str, ...] = ()) -> Verdict:
    return Verdict(state=state, failing=failing)  # type: ignore[arg-type]


TRANSITIONS = [
    # id, status, fails, passes, verdict, retry, recovery -> status, fails, passes
    ("first-fail-down-at-once", "up", 0, 3, "down", 0, 1, "down", 1, 0),
    ("first-fail-below-threshold", "up", 0, 3, "down", 2, 1, "up", 1, 0),
    ("third-fail-confirms", "up", 2, 0, "down", 2, 1, "down", 3, 0),
    ("pass-resets-fails", "up", 2, 0, "up", 2, 1, "up", 0, 1),
    ("recovery-needs-two", "down", 3, 0, "up", 0, 2, "down", 0, 1),
    ("recovery-second-pass", "down", 0, 1, "up", 0, 2, "up", 0, 2),
    ("unknown-keeps-down", "down", 1, 0, "unknown", 0, 1, "down", 1, 0),
    ("unknown-from-pending", "pending", 0, 0, "unknown", 0, 1, "unknown", 0, 0),
    ("degraded", "up", 0, 1, "degraded", 0, 1, "degraded", 0, 2),
    ("pending-first-fail-stays-pending", "pending", 0, 0, "down", 1, 1, "pending", 1, 0),
]


@pytest.mark.parametrize("row", [t[1:] for t in TRANSITIONS], ids=[t[0] for t in TRANSITIONS])
def test_it_applies_thresholds(row: tuple) -> None:  # type: ignore[type-arg]
    status, fails, passes, verdict, retry, recovery, new_status, new_fails, new_passes = row
    new = transition(
        MonitorState(status=status, fail_streak=fails, pass_streak=passes),
        v(verdict),
        retry_count=retry,
        recovery_count=recovery,
    )
    assert (new.status, new.fail_streak, new.pass_streak) == (new_status, new_fails, new_passes)


RECHECKS = [
    # id, verdict, failing, new status, attempt, retry, recovery -> recheck?
    ("fail-below-threshold", "down", ("us-east",), "up", 0, 1, 1, True),
    ("fail-threshold-reached-by-rechecks", "down", ("us-east",), "up", 1, 1, 1, False),
    ("confirmed-down-no-recheck", "down", ("us-east",), "down", 0, 0, 1, False),
    ("one-region-fails-under-majority-once", "up", ("us-east",), "up", 0, 0, 1, True),
    ("one-region-fails-not-twice", "up", ("us-east",), "up", 1, 0, 1, False),
    ("all-pass-nothing-to-confirm", "up", (), "up", 0, 0, 1, False),
    ("recovering", "up", (), "down", 0, 0, 2, True),
    ("recovered", "up", (), "down", 1, 0, 2, False),
    ("unknown-never", "unknown", (), "up", 0, 3, 1, False),
    ("bounded", "down", ("us-east",), "up", 3, 10, 1, False),
]


@pytest.mark.parametrize("row", [t[1:] for t in RECHECKS], ids=[t[0] for t in RECHECKS])
def test_it_rechecks_only_what_needs_confirming(row: tuple) -> None:  # type: ignore[type-arg]
    verdict, failing, status, attempt, retry, recovery, expected = row
    got = needs_recheck(
        v(verdict, failing), MonitorState(status=status), attempt, retry_count=retry, recovery_count=recovery
    )
    assert got is expected
