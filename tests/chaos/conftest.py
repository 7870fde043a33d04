"""The chaos stacks: one per module, started once, shared by its scenarios in file order.

A stack takes several seconds to start and load (100 monitors at 1 s must all be up
first), so each module's scenarios run one after the other on the same stack, each
checking the invariants over its own time window (and the results accounting over the
whole history)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.chaos.harness import Stack


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("chaos"))
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


@pytest.fixture(scope="module")
async def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("chaos-cluster"), cluster=True)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()
