"""How the operator commands reach the API: --url/--api-key, else PROBEFLEET_URL and
PROBEFLEET_API_KEY, else a named profile of $XDG_CONFIG_HOME/probefleet/config.yaml
(~/.config when unset):

    default: prod
    profiles:
      prod: {url: https://probefleet.example.com, api_key_file: /run/secrets/probefleet}
      local: {url: http://127.0.0.1:8080, api_key: pf_...}

The key is sent, never printed. Output helpers (table, json, yaml) live here too, and
`calls_api`, which turns a refusal into its message and an exit status scripts can use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
import yaml

from probefleet.client import ApiError, Client, TransportError

F = TypeVar("F", bound=Callable[..., Any])
# Exit statuses: 1 the server refused (or, for diff, there are changes), 2 bad input,
# 3 the server could not be reached.
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "probefleet" / "config.yaml"


@dataclass(frozen=True)
class Connection:
    url: str | None
    api_key: str | None = field(repr=False)  # never in a traceback or log
    profile: str | None = None

    def client(self, timeout: float = 30.0) -> Client:
        try:
            return Client(self.url, self.api_key, timeout=timeout)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--url") from None


def resolve(url: str | None, api_key: str | None, profile: str | None) -> Connection:
    """Flags, then the environment, then the profile (named, or the file's `default`)."""
    url = url or os.environ.get("PROBEFLEET_URL") or None
    api_key = api_key or os.environ.get("PROBEFLEET_API_KEY") or None
    path = config_path()
    if (url and api_key) or (profile is None and not path.exists()):
        return Connection(url, api_key, None)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise click.UsageError(f"{path}: {e}") from None
    profiles = data.get("profiles") if isinstance(data, dict) else None
    name = profile or (data.get("default") if isinstance(data, dict) else None)
    if name is None:
        return Connection(url, api_key, None)
    if not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        raise click.UsageError(f"{path}: no profile {name!r}")
    p = profiles[name]
    key = p.get("api_key")
    if key is None and p.get("api_key_file"):
        try:
            key = Path(p["api_key_file"]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise click.UsageError(f"profile {name!r}: cannot read api_key_file: {e.strerror}") from None
    return Connection(url or p.get("url"), api_key or key, name)


def connection_options(f: F) -> F:
    """--url, --api-key and --profile on a command; the Connection is in ctx.obj."""
    f = click.option("--profile", help="A profile of $XDG_CONFIG_HOME/probefleet/config.yaml.")(f)
    f = click.option("--api-key", help="API key (or PROBEFLEET_API_KEY, or the profile's).", metavar="KEY")(f)
    f = click.option("--url", help="The controller's URL (or PROBEFLEET_URL, or the profile's).")(f)
    return f


def calls_api(f: F) -> F:
    """A refusal ends the command with the server's message (exit 1; 2 for a 4xx that
    names bad fields), an unreachable server with exit 3."""

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ApiError as e:
            click.echo(f"error: {e.message}", err=True)
            for field, why in e.details.items():
                click.echo(f"  {field}: {why}", err=True)
            sys.exit(EXIT_USAGE if e.status in (400, 422) else EXIT_REFUSED)
        except TransportError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_UNREACHABLE)

    return run  # type: ignore[return-value]


OUTPUT = click.option(
    "--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value, builtin_types=())


def emit(rows: Sequence[Any] | Any, output: str, columns: Sequence[str]) -> None:
    """Rows (msgspec structs or dicts) as a table of `columns`, or all their fields as JSON or YAML."""
    data = builtins(rows)
    if output == "json":
        click.echo(msgspec.json.format(msgspec.json.encode(data)).decode())
    elif output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        items = data if isinstance(data, list) else [data]
        table([[_cell(item.get(c)) for c in columns] for item in items], [c.upper() for c in columns])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
