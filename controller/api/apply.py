"""/api/v1/apply and /api/v1/export: config as code (`probefleet apply`, `diff`, `export`).

An apply set is the resources of some files under an owner: regions, monitors of every
kind (heartbeats included), notification channels and rules, maintenance windows, status
pages with their sections and components. Each has a stable key of the user's choosing,
and references between them use keys, never ids. The server maps (kind, owner, key) to a
resource (storage/apply.py; a region's name is its key) and, in one transaction,
validates every resource with the same functions as the single operations, compares it
with what is stored, and writes only what changed: regions (monitors' locations may name
them), channels, new rules, monitors (parents first), then rules, windows and status pages,
which may name monitors of the same set, then the prune. Regions are never pruned: probes
enroll in them and monitors elsewhere may use them (`probefleet region delete` does it).
The plan is the answer; a dry run rolls the transaction back, so it checks everything an
apply would (references, database constraints) and changes nothing. A resource refused
anywhere rolls back the whole set and its error names the resource by key.

A secret the API shows as "<redacted>" (an export) means "keep the stored value", as in a
PATCH, so export followed by apply changes nothing (a status page's password included).

`file_schema()` is the JSON Schema of the files, generated from the same types (docs/
config-schema.json, served at /api/v1/config-schema.json).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, cast

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api import heartbeats as heartbeats_api
from probefleet.controller.api import maintenance as maintenance_api
from probefleet.controller.api import monitors as monitors_api
from probefleet.controller.api import notifications as notifications_api
from probefleet.controller.api import regions as regions_api
from probefleet.controller.api import status_pages as status_pages_api
from probefleet.controller.api.common import json_problems, ok, require
from probefleet.controller.api.errors import ApiError
from probefleet.controller.monitors import config as monitors
from probefleet.controller.monitors import heartbeat
from probefleet.controller.monitors.config import MonitorConfig
from probefleet.controller.notifications.notifiers import NOTIFIERS, parse_config, redact
from probefleet.controller.status_pages import access as page_access
from probefleet.controller.status_pages import config as page_config
from probefleet.controller.storage import apply as store
from probefleet.controller.storage import fleet as region_store
from probefleet.controller.storage import incidents as window_store
from probefleet.controller.storage import monitors as monitor_store
from probefleet.controller.storage import notifications as notification_store
from probefleet.controller.storage import status_pages as page_store
from probefleet.controller.validation import ValidationError, from_msgspec
from probefleet.shared.redact import REDACTED

# A body of 5,000 monitors is about 1 MB; the application's client_max_size bounds it.
Key = Annotated[str, Meta(min_length=1, max_length=200)]
Owner = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
DEFAULT_OWNER = "default"


class ApplyRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Resources in file form, each with its `key` (the file's `ref`, or its `name`)."""

    owner: Owner = DEFAULT_OWNER
    prune: bool = False
    dry_run: bool = False
    monitors: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    maintenance: list[dict[str, Any]] = []
    status_pages: list[dict[str, Any]] = []
    regions: list[dict[str, Any]] = []


class Change(msgspec.Struct, kw_only=True, omit_defaults=True):
    action: str  # create, update, delete
    kind: str  # monitor, channel, rule, window, status_page, region
    key: str
    id: int | None = None
    fields: list[str] = []


class Plan(msgspec.Struct, kw_only=True):
    owner: str
    dry_run: bool
    changes: list[Change] = []
    unchanged: int = 0
    # The ping URL of each heartbeat this apply created (shown once, like its create).
    ping_urls: dict[str, str] = {}


# Stored names of rule and window fields, and what the files call them.
FILE_NAMES = {
    "channel_ids": "channels",
    "monitor_ids": "monitors",
    "escalation_channel_ids": "escalation_channels",
    "duration_s": "duration",
}
SECTIONS = {
    "region": "regions",
    "monitor": "monitors",
    "channel": "channels",
    "rule": "rules",
    "window": "maintenance",
    "status_page": "status_pages",
}


class _InTransaction:
    """What the channel and rule validators of api/notifications.py read of a request (the
    app's pool and config), with the pool replaced by this apply's connection, so they see
    the channels this transaction made."""

    def __init__(self, app: web.Application, conn: Any) -> None:
        self.app = {keys.POOL: conn, keys.CONFIG: app[keys.CONFIG]}


def _refused(kind: str, key: str, e: ValidationError) -> ValidationError:
    section = SECTIONS[kind]
    details = {f"{section}[{key}].{field}": why for field, why in e.details.items()}
    return ValidationError(details, f"{kind} {key!r} refused: {e.message}; nothing was applied")


def _keyed(kind: str, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    errors: dict[str, object] = {}
    for i, entry in enumerate(entries):
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            errors[f"{SECTIONS[kind]}[{i}].key"] = "required: the resource's stable key"
        elif key in out:
            errors[f"{SECTIONS[kind]}[{key}].key"] = "duplicate key"
        else:
            out[key] = {k: v for k, v in entry.items() if k != "key"}
    if errors:
        raise ValidationError(errors, "bad apply set; nothing was applied")
    return out


def _refs(kind: str, key: str, field: str, wanted: object, ids: dict[str, int]) -> list[int]:
    """Ids of the keys a field lists; a key of no resource of the set is refused."""
    if wanted is None:
        return []
    if not isinstance(wanted, list) or not all(isinstance(k, str) for k in wanted):
        raise _refused(kind, key, ValidationError({field: "must be a list of keys"}))
    missing: dict[str, object] = {
        f"{field}[{i}]": "no such resource in this apply set" for i, k in enumerate(wanted) if k not in ids
    }
    if missing:
        raise _refused(kind, key, ValidationError(missing))
    return [ids[k] for k in wanted]


def _ref(kind: str, key: str, field: str, wanted: object, ids: dict[str, int]) -> int | None:
    if wanted is None:
        return None
    if not isinstance(wanted, str) or wanted not in ids:
        raise _refused(kind, key, ValidationError({field: "no such resource in this apply set"}))
    return ids[wanted]


class _Apply:
    """One apply: the plan so far, the ids of every key, and what to announce after commit."""

    def __init__(self, request: web.Request, conn: Any, req: ApplyRequest) -> None:
        self.request = request
        self.conn = conn
        self.req = req
        self.ctx = cast(web.Request, _InTransaction(request.app, conn))
        self.plan = Plan(owner=req.owner, dry_run=req.dry_run)
        self.ids: dict[str, dict[str, int]] = {kind: {} for kind in SECTIONS}
        self.owned: dict[str, dict[str, int]] = {}
        self.changed_monitors: list[dict[str, Any]] = []
        self.deleted_monitors: list[int] = []
        self.tokens: dict[str, str] = {}
        self.new_keys: dict[str, dict[str, int]] = {}
        self.unwritten: set[str] = set()  # keys of new monitors not yet inserted
        self.changed_pages: list[int] = []
        self.new_regions: list[str] = []
        self.regions_changed = False

    def note(
        self, action: str, kind: str, key: str, rid: int | None, fields: list[str] | None = None
    ) -> None:
        if action == "unchanged":
            self.plan.unchanged += 1
        else:
            self.plan.changes.append(Change(action=action, kind=kind, key=key, id=rid, fields=fields or []))

    async def existing(self, kind: str, wanted: dict[str, dict[str, Any]]) -> dict[str, int]:
        """Key -> id of the owner's resources of `kind`; a key of none takes over the unowned
        resource of the same name (what an export of hand-made resources names)."""
        owner = self.req.owner
        owned = await store.owned(self.conn, kind, owner)
        self.owned[kind] = dict(owned)
        names = {str(e.get("name")): k for k, e in wanted.items() if k not in owned and k == e.get("name")}
        for name, rid in (await store.unowned_named(self.conn, kind, list(names))).items():
            owned[names[name]] = rid
        return owned

    async def record(self, kind: str, key: str, rid: int) -> None:
        """The key's resource; new or moved keys are written by `flush`, in one statement a kind."""
        self.ids[kind][key] = rid
        if self.owned[kind].get(key) != rid:
            self.new_keys.setdefault(kind, {})[key] = rid

    async def flush(self) -> None:
        for kind, new in self.new_keys.items():
            await store.record(self.conn, kind, self.req.owner, new)

    # ---- channels

    async def channels(self, wanted: dict[str, dict[str, Any]]) -> None:
        existing = await self.existing("channel", wanted)
        rows = await notification_store.channels_by_id(self.conn, list(existing.values()))
        for key, entry in wanted.items():
            rid = existing.get(key)
            current = rows.get(rid) if rid is not None else None
            data = notifications_api._normalize(entry, notifications_api.CHANNEL_ALIASES)
            try:
                if current is not None and data.get("kind") != current["kind"]:
                    raise ValidationError({"kind": "cannot change a channel's kind; give it a new key"})
                row, _ = await notifications_api._channel(
                    self.ctx, data, current["config"] if current else None
                )
            except ValidationError as e:
                raise _refused("channel", key, e) from None
            if current is None:
                created = await notification_store.insert_channel(self.conn, row)
                rid = created["id"]
                self.note("create", "channel", key, rid)
            else:
                assert rid is not None
                fields = [f for f in row if row[f] != current[f]]
                if fields:
                    await notification_store.update_channel(self.conn, rid, row)
                self.note("update" if fields else "unchanged", "channel", key, rid, fields)
            await self.record("channel", key, rid)

    # ---- rules: new ones first (monitors may name them), then every one in full

    def _rule_body(self, key: str, entry: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        data = dict(entry)
        monitor_ids = self.ids["monitor"]
        wanted_monitors = data.pop("monitors", [])
        if partial and isinstance(wanted_monitors, list):
            wanted_monitors = [k for k in wanted_monitors if k in monitor_ids]
        data["monitor_ids"] = _refs("rule", key, "monitors", wanted_monitors, monitor_ids)
        data["channel_ids"] = _refs("rule", key, "channels", data.pop("channels", []), self.ids["channel"])
        data["escalation_channel_ids"] = _refs(
            "rule", key, "escalation_channels", data.pop("escalation_channels", []), self.ids["channel"]
        )
        return data

    async def _validated_rule(self, key: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            return await notifications_api._rule(self.ctx, data)
        except ValidationError as e:
            raise _refused("rule", key, e) from None

    async def new_rules(self, wanted: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        existing = await self.existing("rule", wanted)
        rows = {
            r["id"]: r for r in await notification_store.list_rules(self.conn) if r["id"] in existing.values()
        }
        current: dict[str, dict[str, Any]] = {}
        for key, entry in wanted.items():
            rid = existing.get(key)
            if rid is not None and rid in rows:
                current[key] = rows[rid]
                self.ids["rule"][key] = rid
                continue
            row = await self._validated_rule(key, self._rule_body(key, entry, partial=True))
            created = await notification_store.insert_rule(self.conn, row)
            current[key] = created
            self.note("create", "rule", key, created["id"])
            await self.record("rule", key, created["id"])
        return current

    async def rules(self, wanted: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]) -> None:
        for key, entry in wanted.items():
            row = await self._validated_rule(key, self._rule_body(key, entry, partial=False))
            stored = current[key]
            fields = [FILE_NAMES.get(f, f) for f in row if _listish(row[f]) != _listish(stored[f])]
            created = key not in self.owned["rule"] or self.owned["rule"][key] != stored["id"]
            if fields:
                await notification_store.update_rule(self.conn, stored["id"], row)
            if not any(c.kind == "rule" and c.key == key for c in self.plan.changes):
                self.note("update" if fields else "unchanged", "rule", key, stored["id"], fields)
            if created:
                await self.record("rule", key, stored["id"])

    # ---- monitors

    async def monitors(self, wanted: dict[str, dict[str, Any]]) -> None:
        existing = await self.existing("monitor", wanted)
        rows = {r["id"]: r for r in await monitor_store.get_many(self.conn, list(existing.values()))}
        regions = [*self.request.app[keys.REGIONS].ids(), *self.new_regions]
        new: list[tuple[str, MonitorConfig]] = []  # written together, a round trip
        for key in _parents_first(wanted):
            entry = dict(wanted[key])
            rid = existing.get(key)
            current = rows.get(rid) if rid is not None else None
            parent = entry.pop("parent", None)
            if parent is not None and parent in self.unwritten:  # its parent is written first
                await self._insert(new)
            entry["parent_id"] = _ref("monitor", key, "parent", parent, self.ids["monitor"])
            entry["notifications"] = _refs(
                "monitor", key, "notifications", entry.get("notifications", []), self.ids["channel"]
            )
            entry["escalation_policy"] = _ref(
                "monitor", key, "escalation_policy", entry.get("escalation_policy"), self.ids["rule"]
            )
            try:
                data = monitors.normalize(entry)
                if current is not None:
                    if data.get("type", "http") != current["kind"]:
                        raise ValidationError({"type": "cannot change a monitor's type; give it a new key"})
                    if _shows_redacted(data):
                        data = monitors.restore_secrets(data, monitors.config_fields(current))
                cfg = monitors.parse(data, regions)
            except ValidationError as e:
                raise _refused("monitor", key, e) from None
            if current is None:
                new.append((key, cfg))
                self.unwritten.add(key)
                continue
            assert rid is not None
            fields = _monitor_changes(current, cfg)
            if fields:
                updated = await monitor_store.update(self.conn, rid, cfg)
                assert updated is not None
                self.changed_monitors.append(updated)
            self.note("update" if fields else "unchanged", "monitor", key, rid, fields)
            await self.record("monitor", key, rid)
        await self._insert(new)

    async def _insert(self, new: list[tuple[str, MonitorConfig]]) -> None:
        """Write the new monitors gathered so far, and empty the list."""
        rows = await monitor_store.insert_many(self.conn, [cfg for _, cfg in new])
        for (key, _), row in zip(new, rows, strict=True):
            if row["kind"] == "heartbeat":
                self.tokens[key] = await heartbeats_api.attach(self.conn, row)
            self.changed_monitors.append(row)
            self.note("create", "monitor", key, row["id"])
            await self.record("monitor", key, row["id"])
        new.clear()
        self.unwritten.clear()

    # ---- maintenance windows

    async def windows(self, wanted: dict[str, dict[str, Any]]) -> None:
        existing = await self.existing("window", wanted)
        rows = {
            r["id"]: r for r in await window_store.list_windows(self.conn) if r["id"] in existing.values()
        }
        for key, entry in wanted.items():
            data = dict(entry)
            data["monitor_ids"] = _refs(
                "window", key, "monitors", data.pop("monitors", []), self.ids["monitor"]
            )
            try:
                row = maintenance_api.parse(data)
            except ValidationError as e:
                raise _refused("window", key, e) from None
            rid = existing.get(key)
            current = rows.get(rid) if rid is not None else None
            if current is None:
                created = await window_store.insert_window(self.conn, row)
                rid = created["id"]
                self.note("create", "window", key, rid)
            else:
                assert rid is not None
                fields = [FILE_NAMES.get(f, f) for f in row if _listish(row[f]) != _listish(current[f])]
                if fields:
                    await window_store.update_window(self.conn, rid, row)
                self.note("update" if fields else "unchanged", "window", key, rid, fields)
            await self.record("window", key, rid)

    # ---- regions: created or relabelled by name, never deleted

    async def regions(self, wanted: dict[str, dict[str, Any]]) -> None:
        for key, entry in wanted.items():
            data = {"name": key, **entry}
            try:
                if data["name"] != key:
                    raise ValidationError({"name": "a region's key is its name; give no ref"})
                req = regions_api._body(data, regions_api.RegionCreate)
            except ValidationError as e:
                raise _refused("region", key, e) from None
            fields = {f: getattr(req, f) for f in region_store.REGION_FIELDS}
            current = await region_store.get_region(self.conn, key)
            if current is None:
                await region_store.create_region(self.conn, key, fields)
                self.new_regions.append(key)
                self.note("create", "region", key, None)
                self.regions_changed = True
                continue
            # Only the fields the file gives: a region seeded from the settings keeps its labels.
            given = {f: v for f, v in fields.items() if f in entry}
            changed = [f for f, v in given.items() if current[f] != v]
            if changed:
                await region_store.update_region(self.conn, key, {f: given[f] for f in changed})
                self.regions_changed = True
            self.note("update" if changed else "unchanged", "region", key, None, changed)

    # ---- status pages, their sections naming monitors by key

    def _page_body(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        data = dict(entry)
        for field in page_config.INCIDENT_FIELDS:
            if field in data:
                raise _refused(
                    "status_page",
                    key,
                    ValidationError(
                        {field: "the incident banner is news, not configuration: set it with the API"}
                    ),
                )
        sections = data.get("sections")
        if isinstance(sections, list):
            out = []
            for i, section in enumerate(sections):
                if not isinstance(section, dict) or not isinstance(section.get("monitors", []), list):
                    out.append(section)
                    continue
                items = []
                for j, item in enumerate(section.get("monitors", [])):
                    where = f"sections[{i}].monitors[{j}]"
                    if isinstance(item, str):
                        item = {"monitor": item}
                    if not isinstance(item, dict) or not isinstance(item.get("monitor"), str):
                        raise _refused(
                            "status_page",
                            key,
                            ValidationError(
                                {where: "a monitor's key, or an object with monitor and display_name"}
                            ),
                        )
                    item = dict(item)
                    mid = _ref(
                        "status_page", key, f"{where}.monitor", item.pop("monitor"), self.ids["monitor"]
                    )
                    items.append({"monitor_id": mid, **item})
                out.append({**section, "monitors": items})
            data["sections"] = out
        return data

    async def status_pages(self, wanted: dict[str, dict[str, Any]]) -> None:
        existing = await self.existing("status_page", wanted)
        stored: dict[int, list[dict[str, Any]]] = {}
        for c in await page_store.components(self.conn, list(existing.values())):
            stored.setdefault(c["page_id"], []).append(c)
        names = {r["id"]: r["name"] for r in await monitor_store.list_names(self.conn)} if wanted else {}
        for key, entry in wanted.items():
            rid = existing.get(key)
            current = await page_store.get_page(self.conn, rid) if rid is not None else None
            data = self._page_body(key, entry)  # refuses by itself, naming the page
            try:
                keep_password = data.get("password") == REDACTED
                if keep_password:
                    data.pop("password")
                    if current is None:
                        raise ValidationError({"password": "a new page has no stored password to keep"})
                data = page_config.validate(page_config.canonical(data), full=True)
            except ValidationError as e:
                raise _refused("status_page", key, e) from None
            fields = _page_fields(data)
            sections = data.get("sections", [])
            if current is None:
                fields["password_hash"] = await _hashed(data.get("password"))
                async with _in_use(key):
                    rid = await page_store.insert_page(self.conn, fields)
                await page_store.set_components(self.conn, rid, sections)
                self.note("create", "status_page", key, rid)
                self.changed_pages.append(rid)
                await self.record("status_page", key, rid)
                continue
            assert rid is not None
            changed = _page_changes(current, fields)
            write = {f: v for f, v in fields.items() if f in changed}
            if "logo" in changed:
                write["logo_type"] = fields.get("logo_type")
            if not keep_password and not await _same_password(data.get("password"), current["password_hash"]):
                changed.append("password")
                write["password_hash"] = await _hashed(data.get("password"))
            if _stored_sections(stored.get(rid, []), names) != _wanted_sections(sections):
                changed.append("sections")
            if changed:
                async with _in_use(key):
                    await page_store.update_page(self.conn, rid, write)
                if "sections" in changed:
                    await page_store.set_components(self.conn, rid, sections)
                self.changed_pages.append(rid)
            self.note("update" if changed else "unchanged", "status_page", key, rid, changed)
            await self.record("status_page", key, rid)

    # ---- prune: the owner's resources the set no longer names

    async def prune(self) -> None:
        for kind in ("status_page", "window", "rule", "monitor", "channel"):
            gone = {k: rid for k, rid in self.owned.get(kind, {}).items() if k not in self.ids[kind]}
            if not gone:
                continue
            for key, rid in sorted(gone.items()):
                self.note("delete", kind, key, rid)
            ids = list(gone.values())
            if kind == "monitor":
                await monitor_store.delete_many(self.conn, ids)
                self.deleted_monitors.extend(ids)
            else:
                if kind == "status_page":
                    self.changed_pages.extend(ids)
                delete = {
                    "status_page": page_store.delete_page,
                    "window": window_store.delete_window,
                    "rule": notification_store.delete_rule,
                    "channel": notification_store.delete_channel,
                }[kind]
                for rid in ids:
                    await delete(self.conn, rid)
            await store.forget(self.conn, kind, ids)


def _listish(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


# A status page's settings as the file gives them (validated), and the columns they are in.
PAGE_FIELDS = ("name", "slug", "custom_domain", "description", "is_public", *page_config.APPEARANCE_DEFAULTS)


def _page_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The page's columns from a validated file entry: what is left out takes its default,
    as a PUT does, so a field removed from the file is reset."""
    out: dict[str, Any] = {
        "name": data["name"],
        "slug": data["slug"],
        "custom_domain": data.get("custom_domain"),
        "description": data.get("description") or "",
        "is_public": data.get("is_public", True),
    }
    for f, default in page_config.APPEARANCE_DEFAULTS.items():
        out[f] = data.get(f, default)
    out["logo"] = data.get("logo")
    out["logo_type"] = data.get("logo_type")
    return out


@contextlib.asynccontextmanager
async def _in_use(key: str) -> AsyncIterator[None]:
    """A slug or custom domain another page holds: a 409 naming the page and the field (the
    transaction is aborted by then; the caller's rollback undoes the rest)."""
    try:
        yield
    except asyncpg.UniqueViolationError as e:
        field = "custom_domain" if "custom_domain" in str(e) else "slug"
        raise ApiError(
            409,
            "conflict",
            f"status page {key!r}: its {field} is already in use; nothing was applied",
            {f"status_pages[{key}].{field}": "already in use"},
        ) from None


def _page_changes(current: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    changed = [f for f in PAGE_FIELDS if f in fields and current.get(f) != fields[f]]
    logo = fields.get("logo")
    # The version storage/status_pages.py computes with md5() in SQL: a fingerprint, no secret.
    version = hashlib.md5(logo).hexdigest()[:12] if logo else None
    if version != current.get("logo_version"):
        changed.append("logo")
    return changed


async def _hashed(password: str | None) -> str | None:
    return await asyncio.to_thread(page_access.hash_password, password) if password else None


async def _same_password(password: str | None, stored: str | None) -> bool:
    if password is None or stored is None:
        return password is None and stored is None
    return await page_access.verify_password(password, stored)


def _stored_sections(comps: list[dict[str, Any]], names: dict[int, str]) -> list[Any]:
    """The stored components by section, a display name equal to its monitor's name as none,
    an empty description as none."""
    out: dict[str, list[tuple[int, str | None, str | None]]] = {}
    for c in comps:
        display = c["display_name"] if c["display_name"] != names.get(c["monitor_id"]) else None
        out.setdefault(c["section"], []).append((c["monitor_id"], display, c.get("description") or None))
    return list(out.items())


def _wanted_sections(sections: list[dict[str, Any]]) -> list[Any]:
    out: dict[str, list[tuple[int, str | None, str | None]]] = {}
    for s in sections:
        for c in s["monitors"]:
            item = (c["monitor_id"], c["display_name"], c.get("description") or None)
            out.setdefault(s["name"], []).append(item)
    return list(out.items())


def _parents_first(wanted: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Keys with each monitor after its parent (a parent outside the set is refused later);
    a cycle is refused here."""
    done: set[str] = set()
    for start in wanted:
        chain: list[str] = []
        key: str | None = start
        while key is not None and key in wanted and key not in done:
            if key in chain:
                raise _refused("monitor", key, ValidationError({"parent": "parents form a cycle"}))
            chain.append(key)
            parent = wanted[key].get("parent")
            key = parent if isinstance(parent, str) else None
        for k in reversed(chain):
            done.add(k)
            yield k


# What MonitorConfig calls a field, and what the API and the files call it.
API_NAMES = {
    "kind": "type",
    "interval_s": "check_interval",
    "timeout_s": "timeout",
    "enabled": "is_enabled",
    "parent_id": "parent",
}


# MonitorConfig's fields and the monitors columns they are stored in (storage/monitors.py).
COLUMN_OF = {"escalation_policy": "escalation_policy_id"}


def _monitor_changes(current: dict[str, Any], cfg: MonitorConfig) -> list[str]:
    """The fields (file names) in which `cfg` differs from the stored monitor: its columns,
    and its spec. The stored row is not parsed again (a re-apply of 5,000 unchanged monitors
    compares them in milliseconds)."""
    fields = []
    for f in cfg.__struct_fields__:
        if f == "spec":
            continue
        new = getattr(cfg, f)
        if _listish(current.get(COLUMN_OF.get(f, f))) != _listish(new):
            fields.append(API_NAMES.get(f, f))
    old_spec = _stored_spec(current)
    if old_spec != cfg.spec and old_spec is not None and cfg.spec is not None:
        renames = monitors.SPEC_API_NAMES.get(cfg.kind, {})
        fields += [
            renames.get(f, f)
            for f in cfg.spec.__struct_fields__
            if _listish(getattr(old_spec, f)) != _listish(getattr(cfg.spec, f))
        ]
    return fields


def _stored_spec(row: dict[str, Any]) -> msgspec.Struct | None:
    """The stored spec as its struct, so that a default written out (`method: GET`) and one
    left out compare equal."""
    if row["kind"] == "heartbeat":
        return heartbeat.decode_spec(row["spec"])
    return monitors.decode_spec(row["kind"], row["spec"])


def _shows_redacted(data: dict[str, Any]) -> bool:
    """Whether a monitor's fields hold a "<redacted>" the API showed (an export)."""
    fields = ("bearer_token", "basic_auth", "headers", "url", "password", "secrets", "metadata", "steps")
    return any(REDACTED in str(data.get(f, "")) for f in (*fields, "teardown", "diagnostic"))


def _check_scopes(
    caller: dict[str, Any], req: ApplyRequest, *, prunes_notifications: bool, prunes_pages: bool = False
) -> None:
    """The scopes of the single operations the set stands for: `monitors:write` (read for a
    dry run), `notifications:*` too with channels or rules, `status_pages:*` with status
    pages, either also for a prune that may delete the owner's, and `fleet:admin` with
    regions (`monitors:read` for a dry run). The caller was authenticated (and counted by
    the rate limit) once already."""
    mode = "read" if req.dry_run else "write"
    held = set(caller["scopes"])
    wanted = [f"monitors:{mode}"]
    if req.channels or req.rules or prunes_notifications:
        wanted.append(f"notifications:{mode}")
    if req.status_pages or prunes_pages:
        wanted.append(f"status_pages:{mode}")
    if req.regions and not req.dry_run:
        wanted.append("fleet:admin")
    for scope in wanted:
        if scope not in held and "admin" not in held:
            raise ApiError(403, "forbidden", f"this key lacks the scope {scope!r}", {"required_scope": scope})


async def apply_set(request: web.Request) -> web.Response:
    """POST /api/v1/apply: the plan of an apply set, applied unless `dry_run`."""
    caller = await require(request, "monitors:read")
    raw = await request.read()
    try:
        req = msgspec.json.decode(raw, type=ApplyRequest)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "bad_request", "Request body must be valid JSON", {"body": str(e)}) from None
    pool = request.app[keys.POOL]
    prunes = req.prune and await store.owns_any(pool, ("channel", "rule"), req.owner)
    prunes_pages = req.prune and await store.owns_any(pool, ("status_page",), req.owner)
    _check_scopes(caller, req, prunes_notifications=prunes, prunes_pages=prunes_pages)
    if problems := json_problems(msgspec.to_builtins(req)):
        raise ValidationError(problems)
    wanted = {kind: _keyed(kind, getattr(req, section)) for kind, section in SECTIONS.items()}
    async with request.app[keys.POOL].acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await store.lock_owner(conn, req.owner)
            run = _Apply(request, conn, req)
            await run.regions(wanted["region"])
            await run.channels(wanted["channel"])
            current_rules = await run.new_rules(wanted["rule"])
            await run.monitors(wanted["monitor"])
            await run.rules(wanted["rule"], current_rules)
            await run.windows(wanted["window"])
            await run.status_pages(wanted["status_page"])
            if req.prune:
                await run.prune()
            await run.flush()
        except asyncpg.IntegrityConstraintViolationError:
            await tx.rollback()
            # A resource the set names was changed or deleted by hand while this ran.
            raise ApiError(409, "conflict", "a resource changed meanwhile; nothing was applied") from None
        except BaseException:
            await tx.rollback()
            raise
        if req.dry_run:
            await tx.rollback()
        else:
            await tx.commit()
    if not req.dry_run:
        if run.regions_changed:  # first: the set's monitors may run in its new regions
            await regions_api.changed(request.app)
        for row in run.changed_monitors:
            await monitors_api._changed(request, row, row["id"])
        for rid in run.deleted_monitors:
            await monitors_api._changed(request, None, rid)
        for page_id in run.changed_pages:
            await status_pages_api.announce_changed(request.app, page_id)
        run.plan.ping_urls = {
            k: heartbeats_api.token_fields(request, t)["ping_url"] for k, t in run.tokens.items()
        }
    return ok(msgspec.to_builtins(run.plan))


# ---- export ------------------------------------------------------------------------------


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def _key_for(keys_of: dict[int, tuple[str, str]], rid: int, name: str) -> str:
    return keys_of[rid][1] if rid in keys_of else name


def _named(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {"name": entry["name"], **({"ref": key} if key != entry["name"] else {}), **entry}


async def export_set(request: web.Request) -> web.Response:
    """GET /api/v1/export: the live configuration in file form (secrets as "<redacted>")."""
    caller = await require(request, "monitors:read")
    pool = request.app[keys.POOL]
    owner = request.query.get("owner") or None
    tag = request.query.get("tag") or None
    kind = request.query.get("type") or None
    if kind is not None and kind not in monitors.KINDS:
        raise ValidationError({"type": f"unknown type; use one of {', '.join(monitors.KINDS)}"})
    with_notifications = bool({"admin", "notifications:read"} & set(caller["scopes"])) and not (tag or kind)
    mkeys = await store.keys_of(pool, "monitor", owner)
    ckeys = await store.keys_of(pool, "channel", owner)
    rkeys = await store.keys_of(pool, "rule", owner)
    wkeys = await store.keys_of(pool, "window", owner)
    pkeys = await store.keys_of(pool, "status_page", owner)
    f = monitor_store.Filters(kind=kind, tags=[tag] if tag else None)
    rows = await monitor_store.list_filtered(pool, f, limit=1_000_000)
    if owner is not None:
        rows = [r for r in rows if r["id"] in mkeys]
    all_monitors = {r["id"]: r["name"] for r in await monitor_store.list_names(pool)}
    channels = {r["id"]: r for r in await notification_store.list_channels(pool, limit=1_000_000)}
    rules = {r["id"]: r for r in await notification_store.list_rules(pool)}

    def mkey(rid: int) -> str:
        return _key_for(mkeys, rid, all_monitors.get(rid, str(rid)))

    def ckey(rid: int) -> str:
        return _key_for(ckeys, rid, channels[rid]["name"] if rid in channels else str(rid))

    out: dict[str, list[dict[str, Any]]] = {
        "regions": [],
        "monitors": [],
        "heartbeats": [],
        "channels": [],
        "rules": [],
        "maintenance": [],
    }
    for row in rows:
        fields = monitors.redact(monitors.config_fields(row))
        fields["parent"] = mkey(fields.pop("parent_id")) if fields.get("parent_id") else None
        fields["notifications"] = [ckey(c) for c in fields.get("notifications", [])]
        policy = fields.get("escalation_policy")
        fields["escalation_policy"] = (
            _key_for(rkeys, policy, rules[policy]["name"])
            if isinstance(policy, int) and policy in rules
            else None
        )
        entry = _named(_drop_empty(fields), mkey(row["id"]))
        if row["kind"] == "heartbeat":
            entry.pop("type")
            out["heartbeats"].append(entry)
        else:
            out["monitors"].append(entry)
    if with_notifications:
        for rid, row in channels.items():
            if owner is not None and rid not in ckeys:
                continue
            config = redact(row["kind"], parse_config(row["kind"], row["config"]))
            entry = {
                "name": row["name"],
                "kind": row["kind"],
                "config": {k: v for k, v in config.items() if k != "kind"},
                "is_enabled": row["is_enabled"],
                "reminder_minutes": row["reminder_minutes"],
            }
            out["channels"].append(_named(_drop_empty(entry), ckey(rid)))
        for rid, row in rules.items():
            if owner is not None and rid not in rkeys:
                continue
            public = notifications_api.public_rule(row)
            entry = {k: public[k] for k in notifications_api.RuleBody.__struct_fields__}
            entry["channels"] = [ckey(c) for c in entry.pop("channel_ids")]
            entry["monitors"] = [mkey(m) for m in entry.pop("monitor_ids")]
            entry["escalation_channels"] = [ckey(c) for c in entry.pop("escalation_channel_ids")]
            out["rules"].append(_named(_drop_empty(entry), _key_for(rkeys, rid, row["name"])))
    if not (tag or kind):
        for row in await window_store.list_windows(pool):
            if owner is not None and row["id"] not in wkeys:
                continue
            public = maintenance_api.public(row)
            entry = {k: public[k] for k in maintenance_api.WindowBody.__struct_fields__ if k in public}
            entry["monitors"] = [mkey(m) for m in entry.pop("monitor_ids")]
            for k in ("starts_at", "ends_at"):
                if isinstance(entry.get(k), dt.datetime):
                    entry[k] = entry[k].isoformat()
            out["maintenance"].append(_named(_drop_empty(entry), _key_for(wkeys, row["id"], row["name"])))
    if not (tag or kind) and bool({"admin", "status_pages:read"} & set(caller["scopes"])):
        for page in await page_store.list_pages(pool, after_id=0, limit=1_000_000):
            if owner is not None and page["id"] not in pkeys:
                continue
            comps = await page_store.components(pool, [page["id"]])
            entry = await _page_entry(pool, page, comps, mkey, all_monitors)
            out["status_pages"] = [
                *out.get("status_pages", []),
                _named(entry, _key_for(pkeys, page["id"], page["name"])),
            ]
    if owner is None and not (tag or kind):
        for region in await region_store.list_regions(pool):
            fields = {f: region[f] for f in region_store.REGION_FIELDS if region[f] not in ("", None)}
            out["regions"].append({"name": region["name"], **fields})
    return ok({k: v for k, v in out.items() if v})


async def _page_entry(
    pool: Any, page: dict[str, Any], comps: list[dict[str, Any]], mkey: Any, names: dict[int, str]
) -> dict[str, Any]:
    """A status page in file form: its sections name monitors by key, a display name only
    where it is not the monitor's name, a description where there is one, the password as
    "<redacted>", the logo as a data URL."""
    sections: dict[str, list[Any]] = {}
    for c in comps:
        key = mkey(c["monitor_id"])
        item: dict[str, Any] = {"monitor": key}
        if c["display_name"] != names.get(c["monitor_id"]):
            item["display_name"] = c["display_name"]
        if c.get("description"):
            item["description"] = c["description"]
        sections.setdefault(c["section"], []).append(item if len(item) > 1 else key)
    entry: dict[str, Any] = {
        "name": page["name"],
        "slug": page["slug"],
        "description": page["description"] or None,
        "custom_domain": page["custom_domain"],
        "is_public": page["is_public"],
        "password": REDACTED if page["password_hash"] else None,
        "sections": [{"name": k, "monitors": v} for k, v in sections.items()],
    }
    for f, default in page_config.APPEARANCE_DEFAULTS.items():
        if page[f] != default:
            entry[f] = page[f]
    if page["logo_version"] and (logo := await page_store.logo(pool, page["id"])):
        entry["logo"] = f"data:{logo[1]};base64,{base64.b64encode(logo[0]).decode()}"
    return _drop_empty(entry)


# ---- the JSON Schema of the files --------------------------------------------------------

Ref = Annotated[str, Meta(min_length=1, max_length=200)]
# Fields whose file form names other resources by key instead of by id.
REFERENCE_FIELDS: dict[str, Any] = {
    "parent": (Ref | None, None),
    "notifications": (list[Ref], []),
    "escalation_policy": (Ref | None, None),
}


def _fields_of(cls: type[msgspec.Struct], renames: dict[str, str] | None = None) -> list[Any]:
    out: list[Any] = []
    for f in msgspec.structs.fields(cls):
        if f.default_factory is not msgspec.NODEFAULT:
            default: Any = msgspec.field(default_factory=f.default_factory)
        else:
            default = f.default
        name = (renames or {}).get(f.name, f.name)
        # msgspec cannot describe `object`, which the wire structs use for free-form JSON
        # (graphql_variables): any value.
        t = Any if "object" in repr(f.type) else f.type
        out.append((name, t, default) if default is not msgspec.NODEFAULT else (name, t))
    return out


def _monitor_struct(kind: str, *, tagged: bool) -> type[msgspec.Struct]:
    common = [
        f for f in _fields_of(monitors.MonitorCommon) if f[0] not in ("type", "parent_id", *REFERENCE_FIELDS)
    ]
    refs = [(name, t, d) for name, (t, d) in REFERENCE_FIELDS.items()]
    spec_type = heartbeat.HeartbeatSpec if kind == "heartbeat" else monitors.SPEC_TYPES[kind]
    names = {f[0] for f in common}
    spec = [f for f in _fields_of(spec_type, monitors.SPEC_API_NAMES.get(kind)) if f[0] not in names]
    fields: list[Any] = [("ref", Ref | None, None), *common, *refs, *spec]
    fields.sort(key=lambda f: len(f) == 3)  # required fields first
    title = f"{kind.capitalize()}Monitor" if tagged else "Heartbeat"
    options: dict[str, Any] = {"tag_field": "type", "tag": kind} if tagged else {}
    return msgspec.defstruct(title, fields, kw_only=True, forbid_unknown_fields=True, **options)


def _channel_struct(kind: str) -> type[msgspec.Struct]:
    fields: list[Any] = [
        ("name", notifications_api.Name),
        ("config", NOTIFIERS[kind].config_type),
        ("ref", Ref | None, None),
        ("is_enabled", bool, True),
        ("reminder_minutes", notifications_api.Minutes | None, None),
    ]
    return msgspec.defstruct(
        f"{kind.capitalize()}Channel",
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        tag_field="kind",
        tag=kind,
    )


def _rule_struct() -> type[msgspec.Struct]:
    renames = {
        "channel_ids": "channels",
        "monitor_ids": "monitors",
        "escalation_channel_ids": "escalation_channels",
    }
    fields: list[Any] = []
    for f in _fields_of(notifications_api.RuleBody, renames):
        if f[0] in ("channels", "monitors", "escalation_channels"):
            limits = Meta(min_length=1, max_length=100) if f[0] == "channels" else Meta(max_length=100)
            f = (f[0], Annotated[list[Ref], limits], *f[2:])
        if f[0] == "name":
            f = ("name", notifications_api.Name)
        fields.append(f)
    fields.insert(0, ("ref", Ref | None, None))
    fields.sort(key=lambda f: len(f) == 3)
    return msgspec.defstruct("Rule", fields, kw_only=True, forbid_unknown_fields=True)


def _window_struct() -> type[msgspec.Struct]:
    fields: list[Any] = []
    for f in _fields_of(maintenance_api.WindowBody, {"monitor_ids": "monitors"}):
        if f[0] == "monitors":
            f = ("monitors", list[Ref], *f[2:])
        fields.append(f)
    fields.append(("ref", Ref | None, None))
    fields.sort(key=lambda f: len(f) == 3)
    return msgspec.defstruct("MaintenanceWindow", fields, kw_only=True, forbid_unknown_fields=True)


class PageComponent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A monitor on a status page, by key, under another name than its own and with a
    description shown under the name."""

    monitor: Ref
    display_name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    description: Annotated[str, Meta(max_length=500)] | None = None


class PageSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A section of a status page: its monitors by key (or with a display name), in order."""

    name: Annotated[str, Meta(max_length=200)] = ""
    monitors: Annotated[list[Ref | PageComponent], Meta(max_length=500)] = []


def _page_struct() -> type[msgspec.Struct]:
    skip = ("sections", *page_config.INCIDENT_FIELDS)
    fields: list[Any] = [f for f in _fields_of(page_config.StatusPageInput) if f[0] not in skip]
    fields.append(
        ("sections", Annotated[list[PageSection], Meta(max_length=50)], msgspec.field(default_factory=list))
    )
    fields.append(("ref", Ref | None, None))
    fields.sort(key=lambda f: len(f) == 3)
    return msgspec.defstruct("StatusPage", fields, kw_only=True, forbid_unknown_fields=True)


def _region_struct() -> type[msgspec.Struct]:
    return msgspec.defstruct(
        "Region", _fields_of(regions_api.RegionCreate), kw_only=True, forbid_unknown_fields=True
    )


def _defaults_struct() -> type[msgspec.Struct]:
    skip = ("name", "type", "parent_id", *REFERENCE_FIELDS)
    fields: list[Any] = [
        (f[0], f[1] | None, None) for f in _fields_of(monitors.MonitorCommon) if f[0] not in skip
    ]
    fields += [(name, t | None, None) for name, (t, _) in REFERENCE_FIELDS.items() if name != "parent"]
    return msgspec.defstruct("Defaults", fields, kw_only=True, forbid_unknown_fields=True)


def file_schema() -> dict[str, Any]:
    """The JSON Schema of a config-as-code file (docs/config-schema.json)."""
    monitor_types = tuple(_monitor_struct(k, tagged=True) for k in monitors.KINDS)
    channel_types = tuple(_channel_struct(k) for k in NOTIFIERS)
    empty: Any = msgspec.field(default_factory=list)
    fields: list[Any] = [
        ("defaults", _defaults_struct() | None, None),
        ("monitors", _list_of(_union(monitor_types)), empty),
        ("heartbeats", _list_of(_monitor_struct("heartbeat", tagged=False)), empty),
        ("channels", _list_of(_union(channel_types)), empty),
        ("rules", _list_of(_rule_struct()), empty),
        ("maintenance", _list_of(_window_struct()), empty),
        ("status_pages", _list_of(_page_struct()), empty),
        ("regions", _list_of(_region_struct()), empty),
    ]
    config_file = msgspec.defstruct("ConfigFile", fields, kw_only=True, forbid_unknown_fields=True)
    schema = _tidy(msgspec.json.schema(config_file))
    defs = schema["$defs"]
    # A channel's config is tagged with its kind inside the API; in a file the channel's
    # `kind` says it once.
    for kind in NOTIFIERS:
        d = defs[NOTIFIERS[kind].config_type.__name__]
        d["properties"].pop("kind", None)
        d["required"] = [r for r in d.get("required", []) if r != "kind"]
        if not d["required"]:
            d.pop("required")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://probefleet.dev/config-schema.json",
        "title": "probefleet configuration file",
        "description": "Resources for `probefleet apply -f` (docs/config-as-code.md). Strings may hold"
        " ${env:NAME} and ${file:/path} secret references, resolved when the file is applied.",
        **schema,
    }


def _tidy(node: Any) -> Any:
    """Descriptions without their docstring indentation, whichever msgspec renders them."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _tidy(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def _list_of(t: Any) -> Any:
    return list.__class_getitem__(t)


def _union(types: tuple[type[msgspec.Struct], ...]) -> Any:
    out: Any = types[0]
    for t in types[1:]:
        out = out | t
    return out


@functools.cache
def _schema_bytes() -> bytes:
    return msgspec.json.encode(file_schema())


async def config_schema(request: web.Request) -> web.Response:
    """GET /api/v1/config-schema.json: the JSON Schema of config-as-code files."""
    return web.Response(body=_schema_bytes(), content_type="application/schema+json")
