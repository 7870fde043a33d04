"""`probefleet region ...`: regions, enrollment and revocation through the controller's API
(shared/apiclient.py), from any host that can reach it with a key holding `fleet:admin`
(`monitors:read` is enough for `region list`).

`region enroll NAME` prints the enrollment token once and the exact command that joins a
probe host to the region, bare or in a container.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import quote

import click
import msgspec

from probefleet.shared.apiclient import DEFAULT_URL, ApiClient, ApiClientError
from probefleet.shared.version import VERSION

F = TypeVar("F", bound=Callable[..., Any])

PROBE_IMAGE = f"probefleet-probe:{VERSION}"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def parse_duration(text: str) -> int:
    """'90s', '30m', '1h', '7d' or plain seconds, as seconds; ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"{text!r}: use a number with s, m, h or d (for example 1h)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _client(ctx: click.Context) -> ApiClient:
    client: ApiClient = ctx.obj
    return client


def _calls_api(f: F) -> F:
    """A refused or failed request ends the command with its message and exit 1."""

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ApiClientError as e:
            click.echo(f"error: {e.message}", err=True)
            sys.exit(1)

    return run  # type: ignore[return-value]


@click.group()
@click.option(
    "--url",
    envvar="PROBEFLEET_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The controller's URL (or PROBEFLEET_URL).",
)
@click.option("--api-key", envvar="PROBEFLEET_API_KEY", help="API key (or PROBEFLEET_API_KEY).")
@click.pass_context
def region(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Regions of the fleet: list, create, delete, enroll probes, see and revoke them."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r}: use an http:// or https:// URL", param_hint="--url")
    ctx.obj = ApiClient(url, api_key)


def _as_json(data: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(data)).decode())


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@region.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_context
@_calls_api
def list_regions(ctx: click.Context, as_json: bool) -> None:
    """Every region with its live probes, capacity, checks in flight, versions (and how many
    are outdated), jobs published and results received by this controller, and the result
    delay p99 of the last 5 minutes."""
    data = _client(ctx).data("GET", "/api/v1/regions")
    if as_json:
        return _as_json(data)
    rows = [
        [
            r["name"],
            r["display_name"] or r["city"],
            str(r["live_probes"]),
            str(r["enrolled_probes"]),
            str(r["capacity"]),
            str(r["in_flight"]),
            ", ".join(f"{v} ({n})" for v, n in r["versions"].items()) or "-",
            str(r.get("outdated_probes", 0)),
            f"{r.get('results_received', 0)}/{r['jobs_published']}",
            _seconds(r.get("result_delay_p99_seconds")),
        ]
        for r in data
    ]
    _table(
        rows,
        [
            "NAME",
            "DISPLAY NAME",
            "LIVE",
            "ENROLLED",
            "CAPACITY",
            "IN FLIGHT",
            "VERSIONS",
            "OUTDATED",
            "RESULTS/JOBS",
            "DELAY P99",
        ],
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


@region.command("create")
@click.argument("name")
@click.option("--display-name")
@click.option("--city")
@click.option("--country")
@click.option("--country-code", help="ISO 3166 alpha-2, e.g. DE.")
@click.option("--latitude", type=click.FloatRange(-90, 90))
@click.option("--longitude", type=click.FloatRange(-180, 180))
@click.option("--provider", help="Cloud or hosting provider label.")
@click.pass_context
@_calls_api
def create_region(ctx: click.Context, name: str, **labels: Any) -> None:
    """Create the region NAME (lower-case letters, digits and dashes)."""
    body = {"name": name, **{k: v for k, v in labels.items() if v is not None}}
    made = _client(ctx).data("POST", "/api/v1/regions", body)
    click.echo(f"region {made['name']} created")


def probe_commands(controller: str, token: str) -> tuple[str, str]:
    """The command that joins a probe host with `token`, bare and as a container."""
    bare = f"probefleet probe run --enroll {shlex.quote(token)} --controller {shlex.quote(controller)}"
    docker = (
        "docker run -d --name probefleet-probe --restart unless-stopped"
        f" -e PROBEFLEET_ENROLL_TOKEN={shlex.quote(token)}"
        f" -e PROBEFLEET_CONTROLLER_URL={shlex.quote(controller)}"
        f" -v probefleet-probe:/var/lib/probefleet {PROBE_IMAGE}"
    )
    return bare, docker


@region.command("enroll")
@click.argument("name")
@click.option("--expires", default="1h", show_default=True, help="Token lifetime: 30m, 1h, 7d ...")
@click.option("--uses", type=click.IntRange(min=1), help="Probes that may enroll with it (default: any).")
@click.option(
    "--controller",
    "public_url",
    help="The controller URL probes use (default: --url). Must be https unless loopback.",
)
@click.option("--token-only", is_flag=True, help="Print only the token (for scripts).")
@click.pass_context
@_calls_api
def enroll(
    ctx: click.Context, name: str, expires: str, uses: int | None, public_url: str | None, token_only: bool
) -> None:
    """Create an enrollment token for region NAME and print it (once) with the probe command."""
    try:
        seconds = parse_duration(expires)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expires") from None
    client = _client(ctx)
    path = f"/api/v1/regions/{quote(name, safe='')}/enrollment-tokens"
    made = client.data("POST", path, {"expires_in": seconds, "max_uses": uses})
    if token_only:
        click.echo(made["token"])
        return
    bare, docker = probe_commands(public_url or client.base_url, made["token"])
    limit = f"{made['max_uses']} use(s)" if made["max_uses"] else "any number of probes"
    click.echo(
        f"Enrollment token for region {made['region']} ({limit}, expires {made['expires_at']}),"
        " shown only now:\n"
        f"\n  {made['token']}\n"
        "\nOn the probe host, run:\n"
        f"\n  {bare}\n"
        "\nor as a container:\n"
        f"\n  {docker}\n"
    )


@region.command("probes")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_context
@_calls_api
def probes(ctx: click.Context, name: str, as_json: bool) -> None:
    """The probes of region NAME: live ones and enrolled ones not connected now."""
    data = _client(ctx).data("GET", f"/api/v1/regions/{quote(name, safe='')}/probes")
    if as_json:
        return _as_json(data)
    rows = [
        [
            p["probe_id"],
            "live" if p["live"] else "offline",
            p["host"] or "-",
            (p["version"] or "-") + (" (outdated)" if p.get("outdated") else ""),
            f"{p['in_flight']}/{p['concurrency']}" if p["live"] else "-",
            p["last_heartbeat"] or "-",
            p["credential"],
        ]
        for p in data
    ]
    _table(rows, ["PROBE", "STATE", "HOST", "VERSION", "IN FLIGHT", "LAST HEARTBEAT", "CREDENTIAL"])


@region.command("tokens")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_context
@_calls_api
def tokens(ctx: click.Context, name: str, as_json: bool) -> None:
    """The enrollment tokens of region NAME (never the secrets): state, uses, expiry."""
    data = _client(ctx).data("GET", f"/api/v1/regions/{quote(name, safe='')}/enrollment-tokens")
    if as_json:
        return _as_json(data)
    rows = [
        [
            str(t["id"]),
            t["prefix"] + "...",
            t["state"],
            f"{t['uses']}/{t['max_uses'] or '-'}",
            t["expires_at"],
        ]
        for t in data
    ]
    _table(rows, ["ID", "TOKEN", "STATE", "USES", "EXPIRES"])


@region.command("revoke-token")
@click.argument("name")
@click.argument("token_id", type=click.IntRange(min=1))
@click.pass_context
@_calls_api
def revoke_token(ctx: click.Context, name: str, token_id: int) -> None:
    """Revoke enrollment token TOKEN_ID of region NAME (probes enrolled with it stay)."""
    _client(ctx).request("DELETE", f"/api/v1/regions/{quote(name, safe='')}/enrollment-tokens/{token_id}")
    click.echo(f"enrollment token {token_id} revoked")


@region.command("delete")
@click.argument("name")
@click.pass_context
@_calls_api
def delete(ctx: click.Context, name: str) -> None:
    """Delete region NAME (refused while monitors use it or probes hold credentials for it)."""
    _client(ctx).request("DELETE", f"/api/v1/regions/{quote(name, safe='')}")
    click.echo(f"region {name} deleted")


@region.command("revoke")
@click.argument("probe_id")
@click.pass_context
@_calls_api
def revoke(ctx: click.Context, probe_id: str) -> None:
    """Revoke probe PROBE_ID's credential: NATS closes its connection and refuses it."""
    _client(ctx).request("DELETE", f"/api/v1/probes/{quote(probe_id, safe='')}")
    click.echo(f"probe {probe_id} revoked")
