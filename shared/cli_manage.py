"""`probefleet monitors | incidents | keys | status-pages`: the API from the shell, on the
typed client (probefleet.client). Tables by default, `--output json|yaml` for scripts;
exit 1 when the server refuses, 2 for bad input, 3 when it cannot be reached
(shared/cli_connect.py). Regions are `probefleet region` (shared/region_cli.py).
"""

from __future__ import annotations

import itertools
from typing import Any

import click
import msgspec

from probefleet.client import Client
from probefleet.shared.cli_connect import OUTPUT, calls_api, connection_options, emit, resolve

MONITOR_COLUMNS = ("id", "name", "type", "status", "check_interval", "locations", "uptime_24h")
INCIDENT_COLUMNS = ("id", "monitor_id", "status", "severity", "started_at", "resolved_at")
KEY_COLUMNS = ("id", "name", "prefix", "scopes", "expires_at", "last_used_at")
PAGE_COLUMNS = ("id", "slug", "title")


def _api(ctx: click.Context) -> Client:
    client: Client = ctx.obj.client()
    return client


def _group(name: str, help_text: str) -> click.Group:
    @click.group(name=name, help=help_text)
    @connection_options
    @click.pass_context
    def group(ctx: click.Context, url: str | None, api_key: str | None, profile: str | None) -> None:
        ctx.obj = resolve(url, api_key, profile)

    return group


monitors = _group("monitors", "Monitors: list, get, create, pause, resume, delete, check now.")
incidents = _group("incidents", "Incidents: list, acknowledge, resolve.")
keys = _group("keys", "API keys: create (the key is shown once), list, revoke.")
status_pages = _group("status-pages", "Status pages: list.")


def _filters(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None}


@monitors.command("list")
@click.option("--status", help="up, down, degraded, unknown, pending, paused (comma-separated).")
@click.option("--type", "kind", help="Monitor type.")
@click.option("--tag", help="Only monitors with this tag.")
@click.option("--search", help="Text in the name or target.")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@OUTPUT
@click.pass_context
@calls_api
def monitors_list(
    ctx: click.Context,
    status: str | None,
    kind: str | None,
    tag: str | None,
    search: str | None,
    limit: int | None,
    output: str,
) -> None:
    """Monitors matching the filters (as GET /monitors)."""
    found = _api(ctx).monitors(**_filters(status=status, type=kind, tag=tag, search=search))
    emit(list(itertools.islice(found, limit)), output, MONITOR_COLUMNS)


@monitors.command("get")
@click.argument("monitor_id", type=int)
@OUTPUT
@click.pass_context
@calls_api
def monitors_get(ctx: click.Context, monitor_id: int, output: str) -> None:
    """One monitor, all its fields (secrets redacted by the server)."""
    emit(_api(ctx).get_monitor(monitor_id), "yaml" if output == "table" else output, MONITOR_COLUMNS)


@monitors.command("create")
@click.option("--name", required=True)
@click.option("--type", "kind", default="http", show_default=True)
@click.option("--url", "target", help="The target: a URL, or host[:port] for tcp, udp, icmp, dns, tls.")
@click.option("--interval", type=click.IntRange(1), help="Seconds between checks.")
@click.option("--location", "locations", multiple=True, help="A region to check from; repeat.")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat.")
@click.option("--set", "extra", multiple=True, metavar="FIELD=VALUE", help="Any other field (JSON or text).")
@OUTPUT
@click.pass_context
@calls_api
def monitors_create(
    ctx: click.Context,
    name: str,
    kind: str,
    target: str | None,
    interval: int | None,
    locations: tuple[str, ...],
    tags: tuple[str, ...],
    extra: tuple[str, ...],
    output: str,
) -> None:
    """A new monitor (for many, or to keep them in files, use apply)."""
    fields: dict[str, Any] = {"name": name, "type": kind}
    if target:
        fields["url"] = target
    if interval:
        fields["check_interval"] = interval
    if locations:
        fields["locations"] = list(locations)
    if tags:
        fields["tags"] = list(tags)
    for item in extra:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise click.BadParameter(f"{item!r}: use FIELD=VALUE", param_hint="--set")
        try:
            fields[field] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            fields[field] = raw
    emit(_api(ctx).create_monitor(fields), output, MONITOR_COLUMNS)


@monitors.command("pause")
@click.argument("monitor_id", type=int)
@click.option("--reason")
@OUTPUT
@click.pass_context
@calls_api
def monitors_pause(ctx: click.Context, monitor_id: int, reason: str | None, output: str) -> None:
    """Stop checking a monitor (no incidents, no notifications) until resumed."""
    emit(_api(ctx).pause_monitor(monitor_id, reason), output, MONITOR_COLUMNS)


@monitors.command("resume")
@click.argument("monitor_id", type=int)
@OUTPUT
@click.pass_context
@calls_api
def monitors_resume(ctx: click.Context, monitor_id: int, output: str) -> None:
    emit(_api(ctx).resume_monitor(monitor_id), output, MONITOR_COLUMNS)


@monitors.command("delete")
@click.argument("monitor_id", type=int)
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_context
@calls_api
def monitors_delete(ctx: click.Context, monitor_id: int, yes: bool) -> None:
    """Delete a monitor and its history."""
    if not yes:
        click.confirm(f"Delete monitor {monitor_id} and its history?", abort=True)
    _api(ctx).delete_monitor(monitor_id)
    click.echo(f"deleted monitor {monitor_id}")


@monitors.command("check")
@click.argument("monitor_id", type=int)
@OUTPUT
@click.pass_context
@calls_api
def monitors_check(ctx: click.Context, monitor_id: int, output: str) -> None:
    """Run the monitor now in each of its regions; exit 1 unless the verdict is up."""
    run = _api(ctx).request("POST", f"/api/v1/monitors/{monitor_id}/check", json={})
    if output == "table":
        emit(run["regions"], "table", ("region", "status", "reason", "response_time", "status_code"))
        click.echo(f"verdict: {run['status']}")
    else:
        emit(run, output, ())
    if not run["is_ok"]:
        ctx.exit(1)


@incidents.command("list")
@click.option(
    "--status", type=click.Choice(["active", "resolved", "all"]), default="active", show_default=True
)
@click.option("--monitor", "monitor_id", type=int, help="Only this monitor's.")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@OUTPUT
@click.pass_context
@calls_api
def incidents_list(
    ctx: click.Context, status: str, monitor_id: int | None, limit: int | None, output: str
) -> None:
    found = _api(ctx).incidents(**_filters(status=status, monitor_id=monitor_id))
    emit(list(itertools.islice(found, limit)), output, INCIDENT_COLUMNS)


@incidents.command("ack")
@click.argument("incident_id", type=int)
@click.option("--assignee")
@click.option("--notes")
@OUTPUT
@click.pass_context
@calls_api
def incidents_ack(
    ctx: click.Context, incident_id: int, assignee: str | None, notes: str | None, output: str
) -> None:
    """Acknowledge an incident: someone is on it."""
    emit(
        _api(ctx).acknowledge_incident(incident_id, assignee=assignee, notes=notes), output, INCIDENT_COLUMNS
    )


@incidents.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--notes")
@OUTPUT
@click.pass_context
@calls_api
def incidents_resolve(ctx: click.Context, incident_id: int, notes: str | None, output: str) -> None:
    emit(_api(ctx).resolve_incident(incident_id, notes=notes), output, INCIDENT_COLUMNS)


@keys.command("list")
@OUTPUT
@click.pass_context
@calls_api
def keys_list(ctx: click.Context, output: str) -> None:
    """Keys by name and prefix; never the key itself."""
    emit(_api(ctx).request("GET", "/api/v1/api-keys"), output, KEY_COLUMNS)


@keys.command("create")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, help="A scope (monitors:read, ...); repeat.")
@click.option("--expires-in-days", type=click.IntRange(1), help="Expire after this many days.")
@OUTPUT
@click.pass_context
@calls_api
def keys_create(
    ctx: click.Context, name: str, scopes: tuple[str, ...], expires_in_days: int | None, output: str
) -> None:
    """A new key: printed once, here; store it now."""
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if expires_in_days:
        body["expires_in_days"] = expires_in_days
    created = _api(ctx).request("POST", "/api/v1/api-keys", json=body)
    if output == "table":
        click.echo(f"key {created.get('id')} {name}: {created.get('key')}")
        click.echo("This is the only time the key is shown.", err=True)
    else:
        emit(created, output, ())


@keys.command("revoke")
@click.argument("key_id", type=int)
@click.pass_context
@calls_api
def keys_revoke(ctx: click.Context, key_id: int) -> None:
    _api(ctx).request("DELETE", f"/api/v1/api-keys/{key_id}")
    click.echo(f"revoked key {key_id}")


@status_pages.command("list")
@OUTPUT
@click.pass_context
@calls_api
def status_pages_list(ctx: click.Context, output: str) -> None:
    emit(list(_api(ctx).status_pages()), output, PAGE_COLUMNS)
