"""checkers/base.py's timeout: asyncio.timeout's behaviour with one timer per event loop."""

from __future__ import annotations

import asyncio

import pytest

from probefleet.probe.checkers import base


def _idle() -> bool:
    return not any(timers._running for timers in base._timers.values())


async def test_a_block_that_overruns_raises_timeout_error_and_its_task_goes_on() -> None:
    with pytest.raises(TimeoutError):
        async with base.timeout(0.05):
            await asyncio.sleep(30)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)  # no cancel left pending for this task
    assert _idle()


async def test_nested_and_concurrent_blocks_each_fire_at_their_own_time() -> None:
    """The later block starts first, so the shorter one re-arms the shared timer; an outer
    block outlives its inner one's timeout."""

    async def block(seconds: float, sleep: float) -> str:
        try:
            async with base.timeout(seconds):
                await asyncio.sleep(sleep)
        except TimeoutError:
            return "timeout"
        return "done"

    async def nested() -> tuple[str, str]:
        async with base.timeout(5):
            inner = await block(0.05, 30)
            await asyncio.sleep(0.1)
        return inner, "outer done"

    got = await asyncio.gather(block(0.3, 30), block(0.05, 30), block(5, 0.15), nested())
    assert got == ["timeout", "timeout", "done", ("timeout", "outer done")]
    assert _idle()


async def test_a_cancel_from_elsewhere_propagates_through_a_block() -> None:
    entered = asyncio.Event()

    async def waits() -> None:
        async with base.timeout(30):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(waits())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _idle()
