"""Helpers that tests call by name (fixtures live in conftest.py, which pytest loads itself)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


# `timeout` (ASYNC109): the bound is the helper's contract, and it ends in an AssertionError
# that names what was awaited, which a caller's asyncio.timeout would not.
@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    predicate: Callable[[], object],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109
    interval: float = 0.05,
    what: str = "the condition",
) -> object:
    """Call `predicate` (plain or async) until it returns a truthy value, and return that value.

    After `timeout` seconds it gives up with an AssertionError naming `what` and the last
    value; a call still running then is cancelled, so a hung predicate fails in time too.
    Exceptions from `predicate` propagate at once.
    """
    bound = asyncio.timeout_at(asyncio.get_running_loop().time() + timeout)
    last: object = "<no answer yet>"
    try:
        async with bound:
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                last = value
                await asyncio.sleep(interval)
    except TimeoutError:
        if not bound.expired():
            raise  # the predicate's own
    raise AssertionError(f"{what}: not reached within {timeout:g} s (last value: {last!r})")
