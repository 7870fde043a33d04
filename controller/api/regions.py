"""/api/v1/regions (regions as resources, with their live figures), their probes, and
/api/v1/worker-regions (the older read-only list, kept as it answered).

Reading regions needs `monitors:read` (a monitor's locations name them); changing them and
seeing their probes, `fleet:admin`. The live figures come from what this controller
already knows: probe heartbeats (cluster/fleet.py), its own job counter and the results
it stored (`fleet.FLOW`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType
from nats.aio.msg import Msg

from probefleet.client.models import Region, RegionProbe, WorkerRegion
from probefleet.controller import keys, metrics
from probefleet.controller.api.common import ok, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.cluster.fleet import FLOW, Fleet, outdated
from probefleet.controller.cluster.regions import Regions
from probefleet.controller.storage import fleet as store
from probefleet.controller.validation import ValidationError, convert
from probefleet.shared import subjects
from probefleet.shared.wire import ProbeHeartbeat

log = logging.getLogger("probefleet.api")

NAME_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
Label = Annotated[str, Meta(max_length=100)]
Latitude = Annotated[float, Meta(ge=-90, le=90)]
Longitude = Annotated[float, Meta(ge=-180, le=180)]
CountryCode = Annotated[str, Meta(pattern="^([A-Z]{2})?$")]


class RegionCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /regions body. `name` is the region's id in monitors' `locations` and in NATS
    subjects: lower-case letters, digits and dashes."""

    name: Annotated[str, Meta(pattern=NAME_PATTERN)]
    display_name: Label = ""
    city: Label = ""
    country: Label = ""
    country_code: CountryCode = ""
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    provider: Label = ""


class RegionUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /regions/{name} body: the fields to change (the name cannot change)."""

    display_name: Label | UnsetType = UNSET
    city: Label | UnsetType = UNSET
    country: Label | UnsetType = UNSET
    country_code: CountryCode | UnsetType = UNSET
    latitude: Latitude | UnsetType | None = UNSET
    longitude: Longitude | UnsetType | None = UNSET
    provider: Label | UnsetType = UNSET


def worker_regions(app: web.Application) -> list[WorkerRegion]:
    live = app[keys.FLEET].live_regions()
    return [
        WorkerRegion(
            id=r["name"],
            city=r["city"],
            country=r["country"],
            country_code=r["country_code"],
            latitude=r["latitude"],
            longitude=r["longitude"],
            is_active=live.get(r["name"], 0) > 0,
            probe_count=live.get(r["name"], 0),
        )
        for r in app[keys.REGIONS].all()
    ]


async def list_worker_regions(request: web.Request) -> web.Response:
    """Any valid key may read the regions (they are needed to configure a monitor)."""
    await require(request, "monitors:read")
    regions = worker_regions(request.app)
    return ok(msgspec.to_builtins(regions), meta={"count": len(regions)})


# ---- regions ---------------------------------------------------------------------------


def _published() -> dict[str, int]:
    """Jobs this controller published, per region (its Prometheus counter)."""
    out: dict[str, int] = {}
    for family in metrics.JOBS_PUBLISHED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["region"]] = int(sample.value)
    return out


def _figures(
    row: dict[str, Any], live: list[ProbeHeartbeat], enrolled: int, published: int, fleet: Fleet, now: float
) -> Region:
    versions: dict[str, int] = {}
    for hb in live:
        versions[hb.version] = versions.get(hb.version, 0) + 1
    name = row["name"]
    return Region(
        **{f: row[f] for f in ("name", *store.REGION_FIELDS, "created_at", "updated_at")},
        live_probes=len(live),
        capacity=sum(hb.concurrency for hb in live),
        in_flight=sum(hb.in_flight for hb in live),
        versions=dict(sorted(versions.items())),
        outdated_probes=sum(fleet.outdated(hb) for hb in live),
        enrolled_probes=enrolled,
        jobs_published=published,
        results_received=FLOW.received.get(name, 0),
        result_delay_p99_seconds=FLOW.p99(name, now),
    )


async def _regions(request: web.Request, rows: list[dict[str, Any]]) -> list[Region]:
    fleet, now = request.app[keys.FLEET], time.time()
    live: dict[str, list[ProbeHeartbeat]] = {}
    for hb in fleet.live(now):
        live.setdefault(hb.region, []).append(hb)
    enrolled = await store.enrolled_counts(request.app[keys.POOL])
    published = _published()
    return [
        _figures(
            r, live.get(r["name"], []), enrolled.get(r["name"], 0), published.get(r["name"], 0), fleet, now
        )
        for r in rows
    ]


async def list_regions(request: web.Request) -> web.Response:
    """Every region with its live figures."""
    await require(request, "monitors:read")
    regions = await _regions(request, request.app[keys.REGIONS].all())
    return ok(msgspec.to_builtins(regions), meta={"count": len(regions)})


async def _region_row(request: web.Request) -> dict[str, Any]:
    row = await store.get_region(request.app[keys.POOL], request.match_info["name"])
    if row is None:
        raise not_found("region")
    return row


async def get_region(request: web.Request) -> web.Response:
    await require(request, "monitors:read")
    (region,) = await _regions(request, [await _region_row(request)])
    return ok(msgspec.to_builtins(region))


def _body(raw: object, struct: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return convert(raw, struct)


async def changed(app: web.Application) -> None:
    """Reload our copy of the regions, then tell the other controllers to reload theirs."""
    await app[keys.REGIONS].load(app[keys.POOL])
    with contextlib.suppress(Exception):
        await app[keys.NC].publish(subjects.regions_changed(), b"")


async def create_region(request: web.Request) -> web.Response:
    await require(request, "fleet:admin")
    req: RegionCreate = _body(await read_json(request), RegionCreate)
    fields = {f: getattr(req, f) for f in store.REGION_FIELDS}
    row = await store.create_region(request.app[keys.POOL], req.name, fields)
    if row is None:
        raise ApiError(409, "conflict", f"region {req.name!r} exists", {"name": "already exists"})
    await changed(request.app)
    (region,) = await _regions(request, [row])
    return ok(msgspec.to_builtins(region), status=201)


async def patch_region(request: web.Request) -> web.Response:
    await require(request, "fleet:admin")
    raw = await read_json(request)
    if isinstance(raw, dict) and "name" in raw:
        raise ValidationError({"name": "a region's name cannot change; create a new region"})
    req: RegionUpdate = _body(raw, RegionUpdate)
    fields = {f: v for f in store.REGION_FIELDS if (v := getattr(req, f)) is not UNSET}
    row = await store.update_region(request.app[keys.POOL], request.match_info["name"], fields)
    if row is None:
        raise not_found("region")
    await changed(request.app)
    (region,) = await _regions(request, [row])
    return ok(msgspec.to_builtins(region))


async def delete_region(request: web.Request) -> web.Response:
    """Refused (409) while monitors check from the region or probes hold unrevoked
    credentials for it; its enrollment tokens go with it."""
    await require(request, "fleet:admin")
    name = request.match_info["name"]
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        outcome = await store.delete_region(conn, name)
        if outcome == "monitors":
            using = await store.monitors_using(conn, name)
            raise ApiError(
                409,
                "conflict",
                f"{using} monitor(s) check from region {name!r}; remove it from their locations first",
                {"monitors": using},
            )
        if outcome == "probes":
            probes = await store.active_credentials(conn, name)
            raise ApiError(
                409,
                "conflict",
                f"{probes} probe(s) hold credentials for region {name!r}; revoke them first",
                {"probes": probes},
            )
    if outcome == "missing":
        raise not_found("region")
    await changed(request.app)
    return web.Response(status=204)


# ---- probes ----------------------------------------------------------------------------


def _time(seconds: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


async def list_probes(request: web.Request) -> web.Response:
    """The region's live probes and its enrolled probes that are not connected now."""
    await require(request, "fleet:admin")
    row = await _region_row(request)
    fleet = request.app[keys.FLEET]
    credentials = {
        c["probe_id"]: c for c in await store.list_credentials(request.app[keys.POOL], row["name"])
    }
    out: list[RegionProbe] = []
    for hb in sorted(fleet.live(), key=lambda h: h.probe_id):
        if hb.region != row["name"]:
            continue
        cred = credentials.pop(hb.probe_id, None)
        seen = fleet.probes[hb.probe_id][1]
        out.append(
            RegionProbe(
                probe_id=hb.probe_id,
                live=True,
                host=(cred["host"] if cred else None) or getattr(hb, "host", "") or None,
                version=hb.version,
                outdated=fleet.outdated(hb),
                capabilities=getattr(hb, "capabilities", None) or None,
                connected_since=_time(hb.started_at),
                last_heartbeat=_time(seen),
                in_flight=hb.in_flight,
                concurrency=hb.concurrency,
                source_address=hb.source_address,
                credential=_state(cred),
                enrolled_at=cred["created_at"] if cred else None,
            )
        )
    for cred in credentials.values():
        if cred["revoked_at"] is None:
            out.append(
                RegionProbe(
                    probe_id=cred["probe_id"],
                    live=False,
                    host=cred["host"] or None,
                    version=cred["version"] or None,
                    outdated=outdated(cred["version"] or "", fleet.version),
                    capabilities=None,
                    connected_since=None,
                    last_heartbeat=None,
                    in_flight=None,
                    concurrency=None,
                    source_address=None,
                    credential="active",
                    enrolled_at=cred["created_at"],
                )
            )
    return ok(msgspec.to_builtins(out), meta={"count": len(out)})


def _state(cred: dict[str, Any] | None) -> Literal["active", "revoked", "none"]:
    if cred is None:
        return "none"
    return "revoked" if cred["revoked_at"] is not None else "active"


# ---- lifecycle -------------------------------------------------------------------------


async def regions_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the database and NATS): seed the table from the configured
    regions, load it, and reload on any controller's change or every refresh_every."""
    cfg, pool = app[keys.CONFIG], app[keys.POOL]
    regions = app[keys.REGIONS] = Regions.from_config(cfg)
    await regions.seed(pool, cfg)

    async def on_changed(msg: Msg) -> None:
        try:
            await regions.load(pool)
        except Exception as e:
            log.warning("regions reload failed error=%s", e)

    sub = await app[keys.NC].subscribe(subjects.regions_changed(), cb=on_changed)
    stop = asyncio.Event()

    async def refresh() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), regions.refresh_every)
            with contextlib.suppress(Exception):
                await regions.load(pool)

    task = asyncio.create_task(refresh(), name="regions-refresh")
    yield
    stop.set()
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    await asyncio.gather(task, return_exceptions=True)
