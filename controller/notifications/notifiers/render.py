"""Human wording of a notification, shared by chat and email notifiers.

Every notifier that shows text to a person takes title, summary and facts from here,
so the wording of an alert is the same on Slack, in an email and on a phone.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from probefleet.controller.notifications.notifiers.base import Notification, iso8601

State = Literal["down", "up", "degraded", "acknowledged", "warning", "info"]

_LABELS: dict[str, tuple[str, State]] = {
    "monitor.down": ("DOWN", "down"),
    "monitor.up": ("UP", "up"),
    "monitor.degraded": ("DEGRADED", "degraded"),
    "incident.opened": ("INCIDENT", "down"),
    "incident.acknowledged": ("ACKNOWLEDGED", "acknowledged"),
    "incident.resolved": ("RESOLVED", "up"),
    "incident.diagnosed": ("DIAGNOSIS", "info"),
    "ssl.expiring": ("SSL EXPIRING", "warning"),
    "region.unavailable": ("REGION UNAVAILABLE", "warning"),
    "test": ("TEST", "info"),
}

COLORS: dict[State, int] = {
    "down": 0xD92D20,
    "up": 0x12B76A,
    "degraded": 0xF79009,
    "acknowledged": 0x2E90FA,
    "warning": 0xF79009,
    "info": 0x667085,
}

EMOJI: dict[State, str] = {
    "down": "🔴",
    "up": "🟢",
    "degraded": "🟠",
    "acknowledged": "🔵",
    "warning": "⚠️",
    "info": "\N{INFORMATION SOURCE}\ufe0f",
}


class Message(msgspec.Struct, kw_only=True):
    label: str
    state: State
    title: str
    summary: str
    facts: list[tuple[str, str]]
    timestamp: str

    @property
    def color(self) -> int:
        return COLORS[self.state]

    @property
    def emoji(self) -> str:
        return EMOJI[self.state]

    def lines(self) -> list[str]:
        return [self.summary, "", *(f"{k}: {v}" for k, v in self.facts)]

    def text(self) -> str:
        return "\n".join(self.lines())


def duration(seconds: float) -> str:
    """ "15s", "4m 10s", "2h 0m 5s", "3d 1h 0m 0s": no leading zero units."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m")]
    while units and units[0][0] == 0:
        units.pop(0)
    return " ".join([*(f"{n}{u}" for n, u in units), f"{s}s"])


def one_line(text: str) -> str:
    """Monitor names are user input and end up in mail and HTTP headers."""
    return " ".join(text.split())


def _summary(note: Notification) -> str:
    name = one_line(note.monitor.name)
    inc = note.incident
    took = f" after {duration(inc.duration_s)}" if inc and inc.duration_s is not None else ""
    match note.event:
        case "monitor.down":
            return f"{name} is down."
        case "monitor.up":
            return f"{name} is up again{took}."
        case "monitor.degraded":
            return f"{name} is degraded."
        case "incident.opened":
            return f"Incident opened for {name}."
        case "incident.acknowledged":
            return f"Incident for {name} was acknowledged."
        case "incident.resolved":
            return f"Incident for {name} resolved{took}."
        case "incident.diagnosed":
            found = "; ".join(one_line(line) for line in note.diagnostics)
            return f"Diagnosis of the incident for {name}: {found}." if found else f"Diagnosis of {name}."
        case "ssl.expiring":
            return f"The TLS certificate of {name} expires soon."
        case "region.unavailable":
            return f"A probe region for {name} is unavailable."
    return f"Test notification from probefleet for {name}."


def _where(note: Notification) -> str:
    """ " Failing from us-east, eu-west: timeout." for an outage, else empty: the one line
    that says where and why before anyone opens the link."""
    if note.event not in ("monitor.down", "monitor.degraded", "incident.opened"):
        return ""
    inc, chk = note.incident, note.check
    regions = (inc.affected_regions if inc else []) or ([chk.region] if chk and chk.region else [])
    why = (inc.root_cause if inc else None) or (
        " - ".join(x for x in (chk.reason, chk.message) if x) if chk else ""
    )
    if not regions and not why:
        return ""
    where = f" Failing from {', '.join(regions)}" if regions else " Failing"
    return f"{where}: {why}." if why else f"{where}."


def _grouped(note: Notification) -> str:
    n = len(note.group)
    return f" {n} more monitor{'s' if n > 1 else ''} {_also(note)} at the same time." if n else ""


def _also(note: Notification) -> str:
    """What the monitors of a group have in common: an outage, or (a grouped recovery)
    the end of one."""
    return "recovered" if _LABELS[note.event][1] == "up" else "affected"


def _facts(note: Notification) -> list[tuple[str, str]]:
    m, inc, chk = note.monitor, note.incident, note.check
    facts: list[tuple[str, str | None]] = [
        ("Target", m.target or None),
        ("Status", m.status or None),
    ]
    if chk is not None:
        reason = " - ".join(x for x in (chk.reason, chk.message) if x)
        facts += [
            ("Reason", reason or None),
            ("Region", chk.region),
            ("HTTP status", str(chk.status_code) if chk.status_code is not None else None),
            (
                "Response time",
                f"{chk.response_time_ms:.0f} ms" if chk.response_time_ms is not None else None,
            ),
        ]
    if inc is not None:
        checks = (
            f"{inc.checks_failed}/{inc.checks_total}"
            if inc.checks_failed is not None and inc.checks_total is not None
            else None
        )
        facts += [
            ("Incident", f"#{inc.id} ({inc.status})"),
            ("Severity", inc.severity),
            ("Started", iso8601(inc.started_at) if inc.started_at is not None else None),
            ("Resolved", iso8601(inc.resolved_at) if inc.resolved_at is not None else None),
            ("Duration", duration(inc.duration_s) if inc.duration_s is not None else None),
            ("Root cause", inc.root_cause),
            ("Affected regions", ", ".join(inc.affected_regions) or None),
            ("Failed checks", checks),
        ]
    if note.escalation_level:
        facts.append(("Escalation level", str(note.escalation_level)))
    if note.group:
        names = [one_line(g.name) for g in note.group[:GROUP_SHOWN]]
        more = len(note.group) - len(names)
        facts.append((f"Also {_also(note)}", ", ".join(names) + (f" and {more} more" if more > 0 else "")))
    facts.append(("Details", note.link))
    return [(k, v) for k, v in facts if v]


GROUP_SHOWN = 20


def render(note: Notification) -> Message:
    label, state = _LABELS[note.event]
    suffix = " (reminder)" if note.reminder else ""
    return Message(
        label=label,
        state=state,
        title=f"[{label}] {one_line(note.monitor.name)}{suffix}",
        summary=_summary(note) + _where(note) + _grouped(note),
        facts=_facts(note),
        timestamp=iso8601(note.timestamp),
    )
