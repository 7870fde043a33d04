"""What the database checkers (postgres, mysql, redis) share: the value comparison and
the verdict. Not a kind: no spec, not in the registry."""

from __future__ import annotations

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import Reason


def as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}


def verdict(
    value: object,
    expected: str | None,
    degraded_ms: float | None,
    timings: dict[str, float],
    start: float,
    details: dict[str, object] | None = None,
) -> Outcome:
    text = as_text(value)
    shown = None if text is None else text[:200]
    fields: dict[str, object] = {
        "timings": total(timings, start),
        "details": {**(details or {}), "value": shown},
    }
    if expected is not None and text != expected:
        return base.failed(Reason.VALUE_MISMATCH, f"got {shown!r}, expected {expected!r}", **fields)
    return base.passed(fields["timings"]["total"], degraded_ms, **fields)  # type: ignore[index]
