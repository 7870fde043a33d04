"""tests/helpers.py: `eventually` returns the first truthy answer or fails within its bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers import eventually


async def test_it_returns_the_first_truthy_answer_of_a_plain_or_async_predicate() -> None:
    calls = 0

    def third_time() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    async def ready() -> str:
        return "ready"

    assert await eventually(third_time, interval=0.01) == 3
    assert await eventually(ready) == "ready"
    assert await eventually(lambda: ready()) == "ready"


async def test_it_fails_in_time_naming_what_it_waited_for_and_the_last_answer() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"the rows: not reached within 0.3 s \(last value: \[\]\)"):
        await eventually(lambda: [], timeout=0.3, what="the rows")
    assert time.monotonic() - started < 0.6


async def test_it_cancels_a_predicate_still_running_at_the_deadline() -> None:
    async def hang() -> bool:
        await asyncio.sleep(60)
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match="no answer yet"):
        await eventually(hang, timeout=0.2)
    assert time.monotonic() - started < 0.5


async def test_it_lets_the_predicates_own_errors_through() -> None:
    async def broken() -> bool:
        raise TimeoutError("the predicate's own")

    with pytest.raises(TimeoutError, match="the predicate's own"):
        await eventually(broken)
