"""Server-rendered HTML of a public status page: complete without JavaScript; status.js only
patches component states, posts and the banner as Server-Sent Events arrive."""

from __future__ import annotations

from html import escape
from typing import Any

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
_BAR_CLASS = {"operational": "o", "degraded": "d", "outage": "x", "none": "n"}


def _head(title: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/status-assets/status.css">'
    )


def _bars(days: list[dict[str, Any]]) -> str:
    out = []
    for d in days:
        tip = f"{d['date']}: {d['uptime']}%" if d["uptime"] is not None else f"{d['date']}: no data"
        out.append(f'<i class="b{_BAR_CLASS[d["state"]]}" title="{tip}"></i>')
    return "".join(out)


def _component(c: dict[str, Any]) -> str:
    state = c["status"]
    uptime = f"{c['uptime_90d']:.2f}% uptime" if c["uptime_90d"] is not None else "no data yet"
    return (
        f'<li class="component" id="c-{c["id"]}" data-component="{c["id"]}" data-state="{state}">'
        f'<div class="row"><span class="name">{escape(c["name"])}</span>'
        f'<span class="state">{STATE_LABELS[state]}</span></div>'
        f'<div class="bars" role="img" aria-label="90-day uptime: {uptime}">{_bars(c["days"])}</div>'
        f'<div class="legend"><span>90 days ago</span><span>{uptime}</span><span>Today</span></div></li>'
    )


def post(p: dict[str, Any]) -> str:
    """One incident post with its updates (newest first)."""
    updates = "".join(
        f"<li><b>{escape(u['status'].title())}</b> · <time>{escape(str(u['created_at'])[:16])}</time>"
        f"<p>{escape(u['message'])}</p></li>"
        for u in p["updates"]
    )
    return (
        f'<article class="post" id="p-{int(p["id"])}" data-status="{escape(p["status"])}">'
        f"<h3>{escape(p['title'])} <small>{escape(p['status'])}</small></h3>"
        f'<ul class="updates">{updates}</ul></article>'
    )


def _posts(posts: list[dict[str, Any]]) -> str:
    if not posts:
        return '<p class="muted">No incidents reported recently.</p>'
    return "".join(post(p) for p in posts)


def banner(incident: dict[str, Any] | None) -> str:
    """The page-level incident banner; empty once resolved."""
    if not incident or incident["status"] == "resolved":
        return ""
    return (
        f'<section id="banner" class="banner" data-status="{escape(incident["status"])}">'
        f"<b>{escape(incident['status'].title())}</b><p>{escape(incident['message'])}</p></section>"
    )


def _maintenance(windows: list[dict[str, Any]]) -> str:
    if not windows:
        return ""
    rows = "".join(
        f"<li>{escape(w['name'])}: <time>{escape(w['starts_at'][:16])}</time> to "
        f"<time>{escape(w['ends_at'][:16])}</time> UTC</li>"
        for w in windows
    )
    return f'<section class="maintenance"><h2>Scheduled maintenance</h2><ul>{rows}</ul></section>'


def render_page(model: dict[str, Any], *, slug: str, last_event_id: int, notice: str = "") -> str:
    overall = model["status"]
    sections = "".join(
        (f"<h2>{escape(s['name'])}</h2>" if s["name"] else "")
        + f'<ul class="components">{"".join(_component(c) for c in s["components"])}</ul>'
        for s in model["sections"]
    )
    note = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    return (
        _head(f"{model['name']} status")
        + '<script src="/status-assets/status.js" defer></script></head>'
        + f'<body data-events="/status/{slug}/events" data-last-event="{last_event_id}">'
        + f"<header><h1>{escape(model['name'])}</h1>"
        + (f"<p>{escape(model['description'])}</p>" if model["description"] else "")
        + "</header><main>"
        + f'<section id="overall" class="overall" data-state="{overall}">{OVERALL_LABELS[overall]}</section>'
        + banner(model.get("incident"))
        + _maintenance(model["maintenance"])
        + f'<section class="groups">{sections}</section>'
        + f'<section id="posts" class="posts"><h2>Incidents</h2>{_posts(model["posts"])}</section>'
        + note
        + f'<form class="subscribe" method="post" action="/status/{slug}/subscribe">'
        + '<label for="email">Get updates by email</label><div class="row">'
        + '<input id="email" name="email" type="email" required placeholder="you@example.com">'
        + '<button type="submit">Subscribe</button></div></form></main>'
        + f'<footer>Powered by probefleet · <a href="/api/v1/status-pages/{slug}/public">JSON</a>'
        + f' · <a href="/status/{slug}/badge.svg">badge</a></footer></body></html>'
    )


def render_locked(action: str, *, wrong: bool, message: str = "") -> str:
    """The same page for a private page and for a page that does not exist."""
    shown = message or ("Wrong password." if wrong else "")
    error = f'<p class="notice">{escape(shown)}</p>' if shown else ""
    return (
        _head("Private status page")
        + '</head><body><main class="locked"><h1>Private status page</h1>'
        + "<p>This status page is private or does not exist. Enter its password to view it.</p>"
        + error
        + f'<form method="post" action="{escape(action)}"><label for="password">Password</label>'
        + '<div class="row"><input id="password" name="password" type="password" required'
        + ' autocomplete="current-password"><button type="submit">View</button></div></form>'
        + "</main></body></html>"
    )


def render_message(title: str, text: str) -> str:
    return (
        _head(title)
        + f'</head><body><main class="locked"><h1>{escape(title)}</h1><p>{escape(text)}</p>'
        + "</main></body></html>"
    )


_BADGE_COLORS = {
    "operational": "#2da44e",
    "degraded": "#d29922",
    "outage": "#cf222e",
    "partial_outage": "#e16f24",
    "major_outage": "#cf222e",
    "maintenance": "#0969da",
    "unknown": "#8c959f",
}


def badge(label: str, value: str, state: str) -> str:
    """A flat two-part SVG badge; widths from a rough 7 px per character."""
    lw, vw = 10 + 7 * len(label), 10 + 7 * len(value)
    color = _BADGE_COLORS.get(state, "#8c959f")
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lw + vw}" height="20" role="img"'
        f' aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{color}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2}" y="14">{label}</text><text x="{lw + vw / 2}" y="14">{value}</text></g></svg>'
    )
