"""The one Jinja2 environment of the controller's HTML (the console and the public status
pages): autoescaping always on, templates loaded from each package's templates/ folder.

`setup(app)` installs it with aiohttp-jinja2 once; callers render with
`aiohttp_jinja2.render_template(name, request, context)` or `render(app, name, context)`.
A template of the status pages is named `status_pages/<file>` and one of the console
`console/<file>`, so the two never shadow each other.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

_CONTROLLER = Path(__file__).resolve().parent.parent
LOADER = jinja2.PrefixLoader(
    {
        "console": jinja2.FileSystemLoader(_CONTROLLER / "console" / "templates"),
        "status_pages": jinja2.FileSystemLoader(_CONTROLLER / "status_pages" / "templates"),
    }
)


def as_time(value: dt.datetime | str | None) -> dt.datetime | None:
    """A time, or one read back from JSON (a post's updates are aggregated as JSON)."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return value


def iso(value: dt.datetime | str | None) -> str:
    """A time as ISO 8601 UTC with Z (what <time datetime> and the page's script read)."""
    value = as_time(value)
    if value is None:
        return ""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc(value: dt.datetime | str | None) -> str:
    """A time for readers without script: UTC, named."""
    value = as_time(value)
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def environment() -> jinja2.Environment:
    """A new environment (autoescape on for every template, whatever its file name)."""
    env = jinja2.Environment(
        loader=LOADER,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        enable_async=False,
    )
    env.filters["iso"] = iso
    env.filters["utc"] = utc
    return env


def setup(app: web.Application) -> jinja2.Environment:
    """Install the environment on `app` (idempotent: a second call returns the first)."""
    existing: jinja2.Environment | None = app.get(aiohttp_jinja2.APP_KEY)
    if existing is None:
        existing = app[aiohttp_jinja2.APP_KEY] = environment()
    return existing


def render(app: web.Application, name: str, context: dict[str, Any]) -> str:
    """`name` rendered with `context` in `app`'s environment."""
    return aiohttp_jinja2.get_env(app).get_template(name).render(context)
