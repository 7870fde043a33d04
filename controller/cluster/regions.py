"""The regions this controller knows, held in memory for validation that must not wait on
the database (a monitor's `locations`, a `?region=` filter).

The `regions` table is the source; the configured regions seed it at start. A controller
reloads its copy after each change it makes, when another controller announces one over
NATS (subjects.regions_changed), and every `refresh_every` seconds in case an
announcement was missed while NATS was down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probefleet.controller.config import ControllerConfig
from probefleet.controller.storage import DB
from probefleet.controller.storage import fleet as store


@dataclass
class Regions:
    """Region rows by name: the configured ones first, in configured order, then those
    created through the API, oldest first."""

    configured: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_every: float = 30.0

    @classmethod
    def from_config(cls, cfg: ControllerConfig) -> Regions:
        # Until the first load, the configured regions (they are in the table once seeded).
        rows = {r.id: {"name": r.id, **_fields(r)} for r in cfg.regions}
        return cls(configured=cfg.region_ids(), rows=rows)

    async def seed(self, conn: DB, cfg: ControllerConfig) -> None:
        await store.seed_regions(conn, [{"name": r.id, **_fields(r)} for r in cfg.regions])
        await self.load(conn)

    async def load(self, conn: DB) -> None:
        rows = await store.list_regions(conn)
        order = {name: i for i, name in enumerate(self.configured)}
        rows.sort(key=lambda r: (order.get(r["name"], len(order)), r["created_at"], r["name"]))
        self.rows = {r["name"]: r for r in rows}

    def ids(self) -> list[str]:
        return list(self.rows)

    def all(self) -> list[dict[str, Any]]:
        return list(self.rows.values())


def _fields(r: Any) -> dict[str, Any]:
    return {
        "city": r.city,
        "country": r.country,
        "country_code": r.country_code,
        "latitude": r.latitude,
        "longitude": r.longitude,
    }
