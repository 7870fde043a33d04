"""/api/v1/notification-channels and /api/v1/notification-rules.

A channel's config holds secrets (webhook URLs with tokens, passwords, routing keys):
responses show only `redact()` output. An update may send back the redacted values it
was shown; they mean "keep the stored secret".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api.common import by_id, now_utc, ok, parse_int, read_json, require
from probefleet.controller.api.errors import not_found
from probefleet.controller.monitors.config import MonitorConfig
from probefleet.controller.notifications import channel_urls, destinations
from probefleet.controller.notifications.dispatcher import NOTIFIABLE, SEVERITIES
from probefleet.controller.notifications.notifiers import NOTIFIERS, ChannelConfig, parse_config, redact
from probefleet.controller.notifications.notifiers.base import REDACTED, secret_fields, urls
from probefleet.controller.storage import notifications as store
from probefleet.controller.validation import ValidationError, convert, from_msgspec

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Minutes = Annotated[int, Meta(ge=1, le=10080)]
Id = Annotated[int, Meta(ge=1)]
CHANNEL, RULE = "notification channel", "notification rule"

CHANNEL_ALIASES = {
    "type": "kind",
    "enabled": "is_enabled",
    "isActive": "is_enabled",
    "is_active": "is_enabled",
    "settings": "config",
    "reminder_interval_minutes": "reminder_minutes",
    "remind_every_minutes": "reminder_minutes",
}
RULE_ALIASES = {
    "channels": "channel_ids",
    "monitors": "monitor_ids",
    "severity": "min_severity",
    "minimum_severity": "min_severity",
    "enabled": "is_enabled",
    "isActive": "is_enabled",
    "escalation_channels": "escalation_channel_ids",
    "escalate_after": "escalate_after_minutes",
    "reminder_interval_minutes": "reminder_minutes",
    "policy": "is_policy",
    "isPolicy": "is_policy",
}


class ChannelBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    kind: str
    config: dict[str, Any]
    is_enabled: bool = True
    reminder_minutes: Minutes | None = None


class RuleBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    channel_ids: Annotated[list[Id], Meta(min_length=1, max_length=100)]
    name: Annotated[str, Meta(max_length=200)] = ""
    events: list[str] = []
    monitor_ids: list[Id] = []
    tags: list[Annotated[str, Meta(min_length=1, max_length=64)]] = []
    min_severity: str | None = None
    reminder_minutes: Minutes | None = None
    escalate_after_minutes: Minutes | None = None
    escalation_channel_ids: Annotated[list[Id], Meta(max_length=100)] = []
    is_enabled: bool = True
    # An escalation policy: routes only monitors whose escalation_policy names it.
    is_policy: bool = False
    # Grouping: outages starting within group_window_s that share one of these keys make
    # one notification per channel (0: off).
    group_by: Annotated[list[Literal["parent", "tag", "host", "region"]], Meta(max_length=4)] = []
    group_window_s: Annotated[int, Meta(ge=0, le=3600)] = 0


def _normalize(raw: object, aliases: dict[str, str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be a JSON object"})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = aliases.get(str(key), str(key))
        if canonical in out and canonical != key:
            continue
        out[canonical] = value
    return out


# ------------------------------------------------------------ channels


def public_channel(row: dict[str, Any]) -> dict[str, Any]:
    config = parse_config(row["kind"], row["config"])
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "type": row["kind"],
        "config": {k: v for k, v in redact(row["kind"], config).items() if k != "kind"},
        "is_enabled": row["is_enabled"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
        "reminder_minutes": row["reminder_minutes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _keep_secrets(kind: str, new: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Where the client sent back the redacted value it was shown, keep the stored secret.
    In a map of secret values (a webhook's headers) that holds per name: the console's
    header rows send the map with a changed header and "<redacted>" for the kept ones."""
    if stored is None:
        return new
    shown = redact(kind, parse_config(kind, stored))
    out = dict(new)
    for name, mask in secret_fields(NOTIFIERS[kind].config_type).items():
        if name not in out or name not in stored:
            continue
        if out[name] == shown.get(name):
            out[name] = stored[name]
        elif mask == "values" and isinstance(out[name], dict) and isinstance(stored[name], dict):
            kept = stored[name]
            out[name] = {k: kept[k] if v == REDACTED and k in kept else v for k, v in out[name].items()}
    return out


def _config_error(e: msgspec.ValidationError) -> ValidationError:
    text = str(e)
    if text.startswith("Object contains unknown field `") and " - at `$" not in text:
        return ValidationError({f"config.{text.split('`')[1]}": "unknown field"})
    return from_msgspec(e, prefix="config")


async def _destinations(config: ChannelConfig, *, allow_private: bool) -> tuple[dict[str, str], list[str]]:
    """(field name -> why, for each URL of the config whose host is, or resolves to, a
    non-public address; warnings for hosts that do not resolve now). The dispatcher's
    session checks every address again at every delivery."""
    refused: dict[str, str] = {}
    warnings: list[str] = []
    for name, url in urls(config).items():
        try:
            warning = await destinations.check(url, allow_private=allow_private)
        except destinations.DestinationError as e:
            refused[name] = str(e)
        else:
            warnings.extend([warning] if warning else [])
    return refused, warnings


async def _check_destinations(request: web.Request, config: ChannelConfig) -> list[str]:
    """422 on config.<field> for every refused destination of the config; the warnings."""
    refused, warnings = await _destinations(config, allow_private=private_allowed(request))
    if refused:
        raise ValidationError({f"config.{name}": why for name, why in refused.items()})
    return warnings


def _warned(warnings: list[str]) -> dict[str, Any] | None:
    return {"warnings": warnings} if warnings else None


async def _channel(
    request: web.Request, data: dict[str, Any], stored: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """Validate a full channel body; the row to store (config with its secrets) and the
    warnings for the response."""
    body: ChannelBody = convert(data, ChannelBody)
    if body.kind not in NOTIFIERS:
        raise ValidationError({"kind": f"unknown channel kind; use one of {', '.join(sorted(NOTIFIERS))}"})
    config = _keep_secrets(body.kind, {k: v for k, v in body.config.items() if k != "kind"}, stored)
    try:
        parsed = parse_config(body.kind, {**config, "kind": body.kind})
    except msgspec.ValidationError as e:
        raise _config_error(e) from None
    except ValueError as e:
        raise ValidationError({"config": str(e)}) from None
    warnings = await _check_destinations(request, parsed)
    row = {
        "name": body.name,
        "kind": body.kind,
        "config": msgspec.to_builtins(parsed),
        "is_enabled": body.is_enabled,
        "reminder_minutes": body.reminder_minutes,
    }
    return row, warnings


async def create_channel(request: web.Request) -> web.Response:
    await require(request, "notifications:write")
    row, warnings = await _channel(request, _normalize(await read_json(request), CHANNEL_ALIASES), None)
    created = await store.insert_channel(request.app[keys.POOL], row)
    return ok(public_channel(created), status=201, meta=_warned(warnings))


async def list_channels(request: web.Request) -> web.Response:
    await require(request, "notifications:read")
    rows = await store.list_channels(request.app[keys.POOL], limit=1000)
    return ok([public_channel(r) for r in rows], meta={"count": len(rows)})


async def get_channel(request: web.Request) -> web.Response:
    await require(request, "notifications:read")
    return ok(public_channel(await by_id(request, CHANNEL, store.get_channel)))


async def _update_channel(request: web.Request, *, merge: bool) -> web.Response:
    await require(request, "notifications:write")
    current = await by_id(request, CHANNEL, store.get_channel)
    body = _normalize(await read_json(request), CHANNEL_ALIASES)
    if body.get("kind", current["kind"]) != current["kind"]:
        raise ValidationError({"kind": "cannot change a channel's kind; create a new channel"})
    if merge:
        given = body.get("config", {})
        config = {**current["config"], **given} if isinstance(given, dict) else given
        fields = {
            "name": current["name"],
            "is_enabled": current["is_enabled"],
            "reminder_minutes": current["reminder_minutes"],
            **body,
            "config": config,
        }
    else:
        fields = body
    row, warnings = await _channel(request, {**fields, "kind": current["kind"]}, current["config"])
    updated = await store.update_channel(request.app[keys.POOL], current["id"], row)
    if updated is None:
        raise not_found(CHANNEL)
    return ok(public_channel(updated), meta=_warned(warnings))


async def patch_channel(request: web.Request) -> web.Response:
    return await _update_channel(request, merge=True)


async def put_channel(request: web.Request) -> web.Response:
    return await _update_channel(request, merge=False)


async def delete_channel(request: web.Request) -> web.Response:
    await require(request, "notifications:write")
    await by_id(request, CHANNEL, store.delete_channel)
    return web.Response(status=204)


async def test_channel(request: web.Request) -> web.Response:
    """Send a test notification now (even to a disabled channel) and report the outcome."""
    await require(request, "notifications:write")
    channel = await by_id(request, CHANNEL, store.get_channel)
    outcome = await request.app[keys.DISPATCHER].send_test(channel, now_utc())
    return ok(outcome)


def public_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "event_id",
            "channel_id",
            "kind",
            "seq",
            "monitor_id",
            "incident_id",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "updated_at",
            "delivered_at",
        )
    }


async def channel_deliveries(request: web.Request) -> web.Response:
    await require(request, "notifications:read")
    channel = await by_id(request, CHANNEL, store.get_channel)
    limit, raw_cursor = parse_int(request.query.get("limit", "50"), 1, 100), request.query.get("cursor")
    if limit is None:
        raise ValidationError({"limit": "must be an integer from 1 to 100"})
    cursor = None if raw_cursor is None else parse_int(raw_cursor)
    if raw_cursor is not None and cursor is None:
        raise ValidationError({"cursor": "invalid cursor"})
    rows = await store.list_deliveries(
        request.app[keys.POOL],
        channel["id"],
        limit=limit + 1,
        before_id=cursor,
        status=request.query.get("status"),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None}
    return ok([public_delivery(r) for r in rows], meta=meta)


ATTEMPT_OUTCOMES = ("delivered", "failed", "dead", "cancelled")


def public_attempt(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in store.ATTEMPT_COLUMNS.replace(" ", "").split(",")}


async def list_delivery_attempts(request: web.Request) -> web.Response:
    """The delivery log: every attempt to send a notification, newest first, filtered by
    incident, channel and outcome."""
    await require(request, "notifications:read")
    query = request.query
    errors: dict[str, object] = {}
    limit = parse_int(query.get("limit", "50"), 1, 100)
    if limit is None:
        errors["limit"] = "must be an integer from 1 to 100"
    ids: dict[str, int | None] = {}
    for name in ("incident_id", "channel_id", "cursor"):
        raw = query.get(name)
        ids[name] = None if raw is None else parse_int(raw, 1)
        if raw is not None and ids[name] is None:
            errors[name] = "invalid cursor" if name == "cursor" else "must be a positive integer"
    outcome = query.get("outcome")
    if outcome is not None and outcome not in ATTEMPT_OUTCOMES:
        errors["outcome"] = f"must be one of {', '.join(ATTEMPT_OUTCOMES)}"
    if errors or limit is None:
        raise ValidationError(errors)
    rows = await store.list_attempts(
        request.app[keys.POOL],
        incident_id=ids["incident_id"],
        channel_id=ids["channel_id"],
        outcome=outcome,
        before_id=ids["cursor"],
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    meta = {"has_more": more, "next_cursor": str(rows[-1]["id"]) if more else None}
    return ok([public_attempt(r) for r in rows], meta=meta)


# ------------------------------------------------------------ a monitor's references


def private_allowed(request: web.Request) -> bool:
    """Whether channel URLs may name private addresses (notification_channels_allow_private)."""
    return request.app[keys.CONFIG].notification_channels_allow_private


async def _channel_for_url(conn: Any, url: str, field: str, monitor: str, allow_private: bool) -> int:
    """The id of the channel a URL stands for (controller/channel_urls.py): the oldest of
    that kind and URL, or a new one named after the monitor."""
    try:
        kind, config = channel_urls.parse(url)
        parsed = parse_config(kind, {**config, "kind": kind})
    except (ValueError, msgspec.ValidationError) as e:
        raise ValidationError({field: str(e)}) from None
    # A name that does not resolve now is accepted here too (the monitor's response has no
    # place for the warning); every delivery checks its addresses.
    refused, _ = await _destinations(parsed, allow_private=allow_private)
    if refused:
        raise ValidationError({field: next(iter(refused.values()))})
    if (found := await store.channel_with_url(conn, kind, config["url"])) is not None:
        return found
    row = {
        "name": f"{kind} for {monitor}"[:200],
        "kind": kind,
        "config": msgspec.to_builtins(parsed),
        "is_enabled": True,
        "reminder_minutes": None,
    }
    return int((await store.insert_channel(conn, row))["id"])


async def resolve_references(
    conn: Any, cfg: MonitorConfig, prefix: str = "", *, allow_private: bool
) -> MonitorConfig:
    """A monitor's `notifications` must name existing channels (a channel URL, reference
    004, names the channel of that URL, made when missing) and its `escalation_policy` one
    rule (by id or name): 422 with the field path otherwise. The config with channel and
    rule ids, ready to store."""
    errors: dict[str, object] = {}
    channels = [
        entry
        if isinstance(entry, int)
        else await _channel_for_url(conn, entry, f"{prefix}notifications[{i}]", cfg.name, allow_private)
        for i, entry in enumerate(cfg.notifications)
    ]
    for missing in await store.missing_channels(conn, channels):
        errors[f"{prefix}notifications[{channels.index(missing)}]"] = "no such notification channel"
    policy = cfg.escalation_policy
    if policy is not None:
        ids = await store.rules_named(conn, policy)
        if len(ids) == 1:
            policy = ids[0]
        else:
            what = "id" if isinstance(policy, int) else "name"
            problem = (
                "no notification rule with this " + what
                if not ids
                else "several rules have this name; use the id"
            )
            errors[f"{prefix}escalation_policy"] = problem
    if errors:
        raise ValidationError(errors)
    return msgspec.structs.replace(cfg, notifications=list(dict.fromkeys(channels)), escalation_policy=policy)


# ------------------------------------------------------------ rules


def public_rule(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: row[k]
        for k in (
            "id",
            "name",
            "min_severity",
            "reminder_minutes",
            "escalate_after_minutes",
            "is_enabled",
            "is_policy",
            "created_at",
            "updated_at",
        )
    }
    for k in ("events", "monitor_ids", "tags", "channel_ids", "escalation_channel_ids", "group_by"):
        out[k] = list(row[k])
    out["group_window_s"] = row["group_window_s"]
    return out


async def _rule(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    body: RuleBody = convert(data, RuleBody)
    errors: dict[str, object] = {}
    for i, event in enumerate(body.events):
        if event not in NOTIFIABLE:
            errors[f"events[{i}]"] = f"unknown event; use one of {', '.join(sorted(NOTIFIABLE))}"
    minimum = body.min_severity.lower() if body.min_severity else None
    if minimum is not None and minimum not in SEVERITIES:
        errors["min_severity"] = f"must be one of {', '.join(SEVERITIES)}"
    if body.escalate_after_minutes and not body.escalation_channel_ids:
        errors["escalation_channel_ids"] = "required when escalate_after_minutes is set"
    pool = request.app[keys.POOL]
    for name in ("channel_ids", "escalation_channel_ids"):
        ids: list[int] = getattr(body, name)
        for missing in await store.missing_channels(pool, ids):
            errors[f"{name}[{ids.index(missing)}]"] = "no such notification channel"
    if errors:
        raise ValidationError(errors)
    return {**msgspec.structs.asdict(body), "min_severity": minimum}


async def create_rule(request: web.Request) -> web.Response:
    await require(request, "notifications:write")
    row = await _rule(request, _normalize(await read_json(request), RULE_ALIASES))
    return ok(public_rule(await store.insert_rule(request.app[keys.POOL], row)), status=201)


async def list_rules(request: web.Request) -> web.Response:
    await require(request, "notifications:read")
    rows = await store.list_rules(request.app[keys.POOL])
    return ok([public_rule(r) for r in rows], meta={"count": len(rows)})


async def get_rule(request: web.Request) -> web.Response:
    await require(request, "notifications:read")
    return ok(public_rule(await by_id(request, RULE, store.get_rule)))


async def _update_rule(request: web.Request, *, merge: bool) -> web.Response:
    await require(request, "notifications:write")
    current = await by_id(request, RULE, store.get_rule)
    body = _normalize(await read_json(request), RULE_ALIASES)
    if merge:
        shown = public_rule(current)
        body = {**{k: shown[k] for k in RuleBody.__struct_fields__}, **body}
    updated = await store.update_rule(request.app[keys.POOL], current["id"], await _rule(request, body))
    if updated is None:
        raise not_found(RULE)
    return ok(public_rule(updated))


async def patch_rule(request: web.Request) -> web.Response:
    return await _update_rule(request, merge=True)


async def put_rule(request: web.Request) -> web.Response:
    return await _update_rule(request, merge=False)


async def delete_rule(request: web.Request) -> web.Response:
    await require(request, "notifications:write")
    await by_id(request, RULE, store.delete_rule)
    return web.Response(status=204)
