"""A background loop's outage bookkeeping: one warning per outage, every failure counted,
backoff doubling to its cap, a longer bound for each retry."""

from __future__ import annotations

import logging

import pytest

from probefleet.controller import metrics
from probefleet.controller.outage import Outage
from probefleet.controller.storage import db


def failures(loop: str) -> float:
    return metrics.REGISTRY.get_sample_value("probefleet_database_failures_total", {"loop": loop}) or 0.0


def test_an_outage_is_logged_once_counted_every_time_and_backed_off(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("test-loop", base=0.5, cap=5.0)
    caplog.set_level(logging.INFO, logger="probefleet.database")
    before = failures("test-loop")
    delays = [outage.failed(TimeoutError()) for _ in range(8)]
    assert failures("test-loop") == before + 8
    assert outage.down
    # 0.5, 1, 2, 4, 5, 5 ... each within 20 % jitter
    for got, want in zip(delays, [0.5, 1, 2, 4, 5, 5, 5, 5], strict=True):
        assert want * 0.8 <= got <= want * 1.2
    outage.succeeded()
    outage.succeeded()
    assert not outage.down
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("database unavailable")]) == 1
    assert len([m for m in messages if m.startswith("database back")]) == 1
    assert "loop=test-loop" in messages[0] and "failures=8" in messages[1]


def test_each_retry_gets_twice_the_bound_up_to_a_minute() -> None:
    outage = Outage("test-bound")
    with db.bounded(10.0):
        with outage.bounded():
            assert db.current_bound() == 10.0
        outage.failed(TimeoutError())
        with outage.bounded():
            assert db.current_bound() == 20.0
        for _ in range(5):
            outage.failed(TimeoutError())
        with outage.bounded():
            assert db.current_bound() == db.COMMAND_TIMEOUT
        assert db.current_bound() == 10.0
    with outage.bounded():  # no bound of its own: the pool's
        assert db.current_bound() is None
