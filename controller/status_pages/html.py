"""The public status page's HTML, its Atom feed and badges, rendered from plain dicts with
the controller's one Jinja2 environment (console/templating.py: autoescape always on) and
the templates in templates/. Complete without JavaScript; status.js patches component
states, posts and the banner as Server-Sent Events arrive, and shows times in the
visitor's zone; theme.js applies the visitor's light/dark choice before the first paint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from probefleet.controller.console import templating

STATE_LABELS = {
    "operational": "Operational",
    "degraded": "Degraded performance",
    "outage": "Outage",
    "maintenance": "Under maintenance",
    "unknown": "No data",
}
OVERALL_LABELS = {
    "operational": "All systems operational",
    "degraded": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "maintenance": "Under maintenance",
    "unknown": "Status unknown",
}
BAR_CLASS = {"operational": "o", "degraded": "d", "outage": "x", "none": "n"}
BADGE_COLORS = {
    "operational": "#2da44e",
    "degraded": "#d29922",
    "outage": "#cf222e",
    "partial_outage": "#e16f24",
    "major_outage": "#cf222e",
    "maintenance": "#0969da",
    "unknown": "#8c959f",
}
_STATUS_WORD = re.compile(r"\bstatus\b", re.IGNORECASE)


def when(value: str | dt.datetime | None) -> dt.datetime | None:
    """A time given as a datetime or as the API's RFC 3339 text, in UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _stamp(value: str | dt.datetime | None) -> str:
    """RFC 3339 in UTC to the second: the machine-readable time (<time datetime>, Atom)."""
    t = when(value)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z") if t else ""


def _shown(value: str | dt.datetime | None) -> str:
    """The time as a reader without script sees it: UTC, with the zone named (status.js
    replaces it with the visitor's own zone)."""
    t = when(value)
    return f"{t.day} {t:%b %Y, %H:%M} UTC" if t else ""


ENV = templating.environment()
ENV.filters["stamp"] = _stamp
ENV.filters["shown"] = _shown
ENV.globals.update(
    STATE_LABELS=STATE_LABELS, OVERALL_LABELS=OVERALL_LABELS, BAR_CLASS=BAR_CLASS, BADGE_COLORS=BADGE_COLORS
)


def _render(template: str, /, **context: Any) -> str:
    return ENV.get_template(f"status_pages/{template}").render(context)


def _macro(name: str, *args: Any) -> str:
    macro = getattr(ENV.get_template("status_pages/macros.html").module, name)
    return str(macro(*args))


def page_title(name: str) -> str:
    """The browser title: the name and "status", or the name alone when it says status."""
    return name if _STATUS_WORD.search(name) else f"{name} status"


def look(page: dict[str, Any]) -> dict[str, Any]:
    """What of the page's appearance the HTML needs (from a storage row): logo link, the
    page's own stylesheet (colours and custom CSS) when it has one, footer and theme."""
    slug = page["slug"]
    styled = bool(page.get("colors") or page.get("custom_css"))
    version = page.get("logo_version")
    return {
        "logo": f"/status/{slug}/logo?v={version}" if version else None,
        "stylesheet": f"/status/{slug}/theme.css?v={theme_version(page)}" if styled else None,
        "footer": page.get("footer_text") or "",
        "theme": page.get("theme") or "auto",
    }


def theme_version(page: dict[str, Any]) -> str:
    """Changes whenever the page's stylesheet does, so browsers may cache it by its link."""
    return hashlib.sha256(theme_css(page).encode()).hexdigest()[:12]


def theme_css(page: dict[str, Any]) -> str:
    """The page's own stylesheet: its colours as the variables status.css reads, then its
    custom CSS (config.css_problem checked it; served as a file, never inside <style>)."""
    names = {"accent": "--accent", "operational": "--ok", "degraded": "--warn", "outage": "--bad"}
    names["maintenance"] = "--maint"
    colors = page.get("colors") or {}
    lines = [f"  {names[k]}: {v};" for k, v in colors.items() if k in names]
    # As specific as status.css's dark variables and later, so the page's colours win in both.
    selector = ":root, :root:not([data-theme]), :root[data-theme]"
    head = f"{selector} {{\n" + "\n".join(lines) + "\n}\n" if lines else ""
    return head + (page.get("custom_css") or "")


def post(p: dict[str, Any]) -> str:
    """One incident post with its updates (newest first)."""
    return _macro("post", p)


def banner(incident: dict[str, Any] | None) -> str:
    """The page-level incident banner; empty once resolved."""
    return _macro("banner", incident)


def render_page(
    model: dict[str, Any],
    *,
    slug: str,
    last_event_id: int,
    notice: str = "",
    appearance: dict[str, Any] | None = None,
) -> str:
    return _render(
        "page.html",
        m=model,
        slug=slug,
        last_event_id=last_event_id,
        notice=notice,
        look=appearance or look({"slug": slug}),
        title=page_title(model["name"]),
    )


def render_history(
    name: str,
    posts: list[dict[str, Any]],
    *,
    slug: str,
    number: int,
    pages: int,
    appearance: dict[str, Any] | None = None,
) -> str:
    """One page of the incident archive: every post, newest first, with links to the
    newer and older pages."""
    return _render(
        "history.html",
        name=name,
        posts=posts,
        slug=slug,
        number=number,
        pages=pages,
        look=appearance or look({"slug": slug}),
        title=f"Incident history · {page_title(name)}",
    )


def render_feed(
    name: str, description: str, posts: list[dict[str, Any]], *, base: str, slug: str, updated: dt.datetime
) -> str:
    """An Atom feed (RFC 4287) of the page's posts, each entry the post with every update."""
    host = re.sub(r"^[a-z]+://", "", base).split("/")[0].split(":")[0] or "localhost"
    # A plain str: the template escapes it once more, as an Atom `type="html"` content wants.
    entries = [{**p, "html": str(post(p))} for p in posts]
    return _render(
        "feed.atom",
        name=name,
        title=page_title(name),
        description=description,
        entries=entries,
        base=base.rstrip("/"),
        slug=slug,
        host=host,
        updated=updated,
    )


def render_locked(action: str, *, wrong: bool, message: str = "") -> str:
    """The same page for a private page and for a page that does not exist."""
    error = message or ("Wrong password." if wrong else "")
    return _render("locked.html", title="Private status page", action=action, error=error)


def render_message(title: str, text: str, *, form_token: str | None = None) -> str:
    """A short message page; `form_token` adds the unsubscribe button's form."""
    return _render("message.html", title=title, text=text, form_token=form_token)


def badge(label: str, value: str, state: str) -> str:
    """A flat two-part SVG badge; widths from a rough 7 px per character."""
    lw, vw = 10 + 7 * len(label), 10 + 7 * len(value)
    color = BADGE_COLORS.get(state, "#8c959f")
    return _render("badge.svg", label=label, value=value, lw=lw, vw=vw, color=color)
