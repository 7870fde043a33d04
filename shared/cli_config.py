"""`probefleet validate | apply | diff | export`: config as code (docs/config-as-code.md).

`validate` works offline (shared/cli_files.py). `apply` and `diff` send the set to POST
/api/v1/apply, which plans it against the live server in one transaction (`diff` and the
preview of `apply` as a dry run), so the plan is the server's, not a local lock file's.
Exit statuses: 0 done (diff: no changes), 1 diff found changes or the server refused,
2 bad files or input, 3 the server could not be reached.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from probefleet.client import ApiError
from probefleet.shared import cli_files
from probefleet.shared.cli_connect import EXIT_REFUSED, EXIT_USAGE, calls_api, connection_options, resolve

FILES = click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A YAML file or a folder of them; repeat for more.",
)
OWNER = click.option(
    "--owner",
    default="default",
    show_default=True,
    help="The apply set's owner: prune deletes only resources this owner applied.",
)
# Applying 5,000 monitors takes seconds; a slow server gets longer than the default.
APPLY_TIMEOUT = 300.0


def _load(paths: tuple[Path, ...]) -> cli_files.ApplySet:
    try:
        return cli_files.load(paths)
    except cli_files.FileError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        click.echo(f"{len(e.problems)} problem(s); nothing was applied", err=True)
        sys.exit(EXIT_USAGE)


def _body(s: cli_files.ApplySet, owner: str, prune: bool, dry_run: bool) -> dict[str, Any]:
    try:
        return cli_files.request_body(s, owner=owner, prune=prune, dry_run=dry_run)
    except cli_files.FileError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        click.echo("nothing was applied", err=True)
        sys.exit(EXIT_USAGE)


def _send(ctx: click.Context, s: cli_files.ApplySet, body: dict[str, Any]) -> dict[str, Any]:
    """The server's plan; a refusal printed with the place of each bad field in the files."""
    api = ctx.obj.client(timeout=APPLY_TIMEOUT)
    try:
        plan: dict[str, Any] = api.request("POST", "/api/v1/apply", json=body)
    except ApiError as e:
        click.echo(f"error: {e.message}", err=True)
        for field, why in e.details.items():
            place = cli_files.place_of_error(s, field)
            prefix = f"{place[0]}:{place[1]}:{place[2]}: " if place else ""
            click.echo(f"{prefix}{field}: {why}", err=True)
        sys.exit(EXIT_USAGE if e.status in (400, 422) else EXIT_REFUSED)
    return plan


SYMBOL = {"create": "+", "update": "~", "delete": "-"}


def show_plan(plan: dict[str, Any]) -> None:
    for c in plan["changes"]:
        line = f"  {SYMBOL[c['action']]} {c['kind']} {c['key']}"
        if c.get("fields"):
            line += f" ({', '.join(c['fields'])})"
        click.echo(line)
    counts = {a: sum(c["action"] == a for c in plan["changes"]) for a in SYMBOL}
    click.echo(
        f"Plan: {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete,"
        f" {plan['unchanged']} unchanged."
    )


@click.command()
@FILES
def validate(paths: tuple[Path, ...]) -> None:
    """Check files offline: YAML, fields, keys, references. Every problem as file:line:column."""
    s = _load(paths)
    click.echo(f"ok: {len(s.resources)} resource(s) in {len(cli_files.files_of(paths))} file(s)")


@click.command()
@FILES
@OWNER
@connection_options
@click.pass_context
@calls_api
def diff(
    ctx: click.Context,
    paths: tuple[Path, ...],
    owner: str,
    url: str | None,
    api_key: str | None,
    profile: str | None,
) -> None:
    """What apply would change (with --prune's deletes). Exit 0: none, 1: changes, >1: error."""
    ctx.obj = resolve(url, api_key, profile)
    s = _load(paths)
    plan = _send(ctx, s, _body(s, owner, prune=True, dry_run=True))
    show_plan(plan)
    sys.exit(1 if plan["changes"] else 0)


@click.command()
@FILES
@OWNER
@click.option("--prune", is_flag=True, help="Delete the owner's resources the files no longer name.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@connection_options
@click.pass_context
@calls_api
def apply(
    ctx: click.Context,
    paths: tuple[Path, ...],
    owner: str,
    prune: bool,
    yes: bool,
    url: str | None,
    api_key: str | None,
    profile: str | None,
) -> None:
    """Plan the files against the server, show the plan, apply it (one transaction)."""
    ctx.obj = resolve(url, api_key, profile)
    s = _load(paths)
    preview = _send(ctx, s, _body(s, owner, prune, dry_run=True))
    show_plan(preview)
    if not preview["changes"]:
        click.echo("No changes.")
        return
    deletes = [c for c in preview["changes"] if c["action"] == "delete"]
    if deletes and not yes:
        if not sys.stdin.isatty():
            click.echo("error: the plan deletes resources; confirm with --yes", err=True)
            sys.exit(EXIT_USAGE)
        click.confirm(f"Delete {len(deletes)} resource(s)?", abort=True)
    plan = _send(ctx, s, _body(s, owner, prune, dry_run=False))
    for key, ping_url in plan.get("ping_urls", {}).items():
        click.echo(f"heartbeat {key}: ping {ping_url} (shown once)")
    counts = {a: sum(c["action"] == a for c in plan["changes"]) for a in SYMBOL}
    click.echo(
        f"Applied: {counts['create']} created, {counts['update']} updated, {counts['delete']} deleted."
    )


@click.command()
@click.option("--owner", help="Only the resources this owner applied.")
@click.option("--tag", help="Only monitors with this tag.")
@click.option("--type", "kind", help="Only monitors of this type (http, tcp, ..., heartbeat).")
@click.option(
    "-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout."
)
@connection_options
@click.pass_context
@calls_api
def export(
    ctx: click.Context,
    owner: str | None,
    tag: str | None,
    kind: str | None,
    out: Path | None,
    url: str | None,
    api_key: str | None,
    profile: str | None,
) -> None:
    """The live configuration as a file for apply. Secrets appear as "<redacted>", which
    apply reads as "keep the stored value"; replace them with ${env:...} to apply elsewhere."""
    ctx.obj = resolve(url, api_key, profile)
    api = ctx.obj.client(timeout=APPLY_TIMEOUT)
    data = api.request("GET", "/api/v1/export", params={"owner": owner, "tag": tag, "type": kind})
    text = "# probefleet export; apply with: probefleet apply -f FILE" + (
        f" --owner {owner}" if owner else ""
    )
    text += "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        count = sum(len(v) for v in data.values())
        click.echo(f"wrote {count} resource(s) to {out}")
