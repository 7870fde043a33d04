"""SQL per aggregate. `DB` is anything that runs a query; `Tx` a connection (in a transaction)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Tx: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
DB: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any] | asyncpg.Pool[Any]"
