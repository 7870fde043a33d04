"""What a status page may be set to: the admin's page bodies (aliases folded, every field
checked with field-level errors), incident posts, and a visitor's subscription.

Pure functions raising ValidationError; the API renders it as a 422.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

import msgspec

from probefleet.controller.validation import ValidationError

# The page bodies as types: what the OpenAPI document and the config-as-code file schema
# describe (validate() below checks them, with the aliases and field-level errors).


class StatusPageMonitor(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A component: the monitor shown, its name on the page (default: the monitor's) and
    a description shown under the name (at most 500 characters; omitted or null: none)."""

    monitor_id: int
    display_name: str | None = None
    description: str | None = None


class StatusPageSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = ""
    monitors: list[StatusPageMonitor] = []


class StatusPageColors(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Hex colours (#rgb or #rrggbb) of the page's accent and of each state."""

    accent: str | None = None
    operational: str | None = None
    degraded: str | None = None
    outage: str | None = None
    maintenance: str | None = None


class StatusPageInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A status page. `password` makes it private (null removes it); `incident_status`
    with `incident_message` shows a banner. `logo` is a base64 data URL of a PNG, JPEG,
    GIF, WebP or SVG image of at most 256 KiB (null removes it; omitted on PUT, kept);
    `custom_css` may not contain '<' or @import; `theme` is the default for visitors who
    have not chosen (auto: their system's)."""

    name: str
    slug: str
    description: str | None = None
    custom_domain: str | None = None
    is_public: bool | None = None
    password: str | None = None
    sections: list[StatusPageSection] | None = None
    incident_status: Literal["investigating", "identified", "monitoring", "resolved"] | None = None
    incident_message: str | None = None
    logo: str | None = None
    colors: StatusPageColors | None = None
    custom_css: str | None = None
    footer_text: str | None = None
    theme: Literal["auto", "light", "dark"] | None = None
    show_response_times: bool | None = None


class StatusPageUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields to change."""

    name: str | None = None
    slug: str | None = None
    description: str | None = None
    custom_domain: str | None = None
    is_public: bool | None = None
    password: str | None = None
    sections: list[StatusPageSection] | None = None
    incident_status: Literal["investigating", "identified", "monitoring", "resolved"] | None = None
    incident_message: str | None = None
    logo: str | None = None
    colors: StatusPageColors | None = None
    custom_css: str | None = None
    footer_text: str | None = None
    theme: Literal["auto", "light", "dark"] | None = None
    show_response_times: bool | None = None


SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,253}\.[^@\s<>,;]+$")
INCIDENT_STATES = ("investigating", "identified", "monitoring", "resolved")
COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
# What `colors` may set: the accent (header, links, buttons) and each state's colour.
COLOR_KEYS = ("accent", "operational", "degraded", "outage", "maintenance")
THEMES = ("auto", "light", "dark")
LOGO_MAX = 256 * 1024
CSS_MAX = 20_000
# Media types of a logo by the bytes it starts with (the data URL's claim must agree).
_LOGO_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "image/svg+xml": (b"<svg", b"<?xml"),
}
# Paths under /status/ that a slug would shadow.
RESERVED_SLUGS = frozenset({"static", "api", "admin", "assets"})

# Every accepted key (aliases from the references) mapped to its canonical field.
_ALIASES = {
    "name": "name",
    "title": "name",
    "slug": "slug",
    "custom_domain": "custom_domain",
    "customDomain": "custom_domain",
    "domain": "custom_domain",
    "description": "description",
    "is_public": "is_public",
    "isPublic": "is_public",
    "public": "is_public",
    "password": "password",
    "sections": "sections",
    "monitors": "monitors",
    "components": "monitors",
    "incident_status": "incident_status",
    "incidentStatus": "incident_status",
    "incident_message": "incident_message",
    "incidentMessage": "incident_message",
    "logo": "logo",
    "colors": "colors",
    "colours": "colors",
    "custom_css": "custom_css",
    "customCss": "custom_css",
    "css": "custom_css",
    "footer_text": "footer_text",
    "footerText": "footer_text",
    "footer": "footer_text",
    "theme": "theme",
    "show_response_times": "show_response_times",
    "showResponseTimes": "show_response_times",
}
# What PUT sets when the body leaves it out (the logo, like the password, is kept).
APPEARANCE_DEFAULTS: dict[str, Any] = {
    "colors": {},
    "custom_css": "",
    "footer_text": "",
    "theme": "auto",
    "show_response_times": False,
}
INCIDENT_FIELDS = ("incident_status", "incident_message")


def canonical(body: Any) -> dict[str, Any]:
    """The body with aliases folded in; 422 on unknown fields, duplicates or a non-object."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    out: dict[str, Any] = {}
    errors: dict[str, object] = {}
    for key, value in body.items():
        field = _ALIASES.get(key)
        if field is None:
            errors[key] = "unknown field"
        elif field in out:
            errors[key] = f"given twice (as {field!r} too)"
        else:
            out[field] = value
    if "monitors" in out:
        if "sections" in out:
            errors["monitors"] = "give either sections or monitors"
        else:
            out["sections"] = _flat_to_sections(out.pop("monitors"))
    if errors:
        raise ValidationError(errors)
    return out


def _flat_to_sections(items: Any) -> Any:
    """A flat monitors list: each item may name its section; order of first use is kept."""
    if not isinstance(items, list):
        return items
    sections: dict[str, list[Any]] = {}
    for item in items:
        name = item.get("section", "") if isinstance(item, dict) else ""
        entry = {k: v for k, v in item.items() if k != "section"} if isinstance(item, dict) else item
        sections.setdefault(name if isinstance(name, str) else "", []).append(entry)
    return [{"name": k, "monitors": v} for k, v in sections.items()]


def _text(errors: dict[str, object], data: dict[str, Any], field: str, lo: int, hi: int) -> None:
    value = data.get(field)
    if not isinstance(value, str) or not lo <= len(value.strip()) <= hi:
        errors[field] = f"must be a string of {lo} to {hi} characters"
    else:
        data[field] = value.strip()


def validate(data: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """Check each given field (all required ones when `full`); 422 lists every bad field."""
    errors: dict[str, object] = {}
    if full:
        for field in ("name", "slug"):
            if field not in data:
                errors[field] = "required field"
    if "name" in data:
        _text(errors, data, "name", 1, 200)
    if "slug" in data:
        slug = data["slug"]
        if not isinstance(slug, str) or not SLUG.match(slug):
            errors["slug"] = "lower-case letters, digits and dashes, 1 to 64, no dash at either end"
        elif slug in RESERVED_SLUGS:
            errors["slug"] = "reserved"
    if "description" in data:
        if data["description"] is None:
            data["description"] = ""
        _text(errors, data, "description", 0, 2000)
    if data.get("custom_domain") is not None:
        domain = data["custom_domain"]
        if not isinstance(domain, str) or not HOSTNAME.match(domain.lower().rstrip(".")):
            errors["custom_domain"] = "must be a host name such as status.example.com"
        else:
            data["custom_domain"] = domain.lower().rstrip(".")
    if "is_public" in data and not isinstance(data["is_public"], bool):
        errors["is_public"] = "must be true or false"
    password = data.get("password")
    if password is not None and (not isinstance(password, str) or not 8 <= len(password) <= 200):
        errors["password"] = "must be a string of 8 to 200 characters (null removes it)"
    if "sections" in data:
        data["sections"] = _sections(errors, data["sections"])
    _appearance(errors, data)
    _incident(errors, data)
    if errors:
        raise ValidationError(errors)
    return data


def _sections(errors: dict[str, object], raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 50:
        errors["sections"] = "must be a list of at most 50 sections"
        return []
    seen: set[int] = set()
    out = []
    for i, section in enumerate(raw):
        where = f"sections[{i}]"
        if not isinstance(section, dict) or set(section) - {"name", "monitors"}:
            errors[where] = "must be an object with name and monitors"
            continue
        name = section.get("name", "")
        if not isinstance(name, str) or len(name) > 200:
            errors[f"{where}.name"] = "must be a string of at most 200 characters"
            name = ""
        items = section.get("monitors", [])
        if not isinstance(items, list) or len(items) > 500:
            errors[f"{where}.monitors"] = "must be a list of at most 500 monitors"
            continue
        monitors = []
        for j, item in enumerate(items):
            entry = _component(errors, f"{where}.monitors[{j}]", item, seen)
            if entry is not None:
                monitors.append(entry)
        out.append({"name": name.strip(), "monitors": monitors})
    return out


_COMPONENT_KEYS = frozenset(
    {"monitor_id", "monitorId", "id", "display_name", "displayName", "name", "description"}
)


def _component(errors: dict[str, object], where: str, item: Any, seen: set[int]) -> dict[str, Any] | None:
    if isinstance(item, int) and not isinstance(item, bool):
        item = {"monitor_id": item}
    if not isinstance(item, dict):
        errors[where] = "must be a monitor id or an object with monitor_id and display_name"
        return None
    unknown = set(item) - _COMPONENT_KEYS
    if unknown:
        errors[f"{where}.{sorted(unknown)[0]}"] = "unknown field"
        return None
    mid = item.get("monitor_id", item.get("monitorId", item.get("id")))
    if not isinstance(mid, int) or isinstance(mid, bool) or mid <= 0:
        errors[f"{where}.monitor_id"] = "required: a monitor id"
        return None
    if mid in seen:
        errors[f"{where}.monitor_id"] = "this monitor is already on the page"
        return None
    seen.add(mid)
    display = item.get("display_name", item.get("displayName", item.get("name")))
    if display is not None and (not isinstance(display, str) or not 1 <= len(display.strip()) <= 200):
        errors[f"{where}.display_name"] = "must be a string of 1 to 200 characters"
        return None
    description = item.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 500):
        errors[f"{where}.description"] = "must be a string of at most 500 characters"
        return None
    return {
        "monitor_id": mid,
        "display_name": display.strip() if display else None,
        "description": description.strip() if description else "",
    }


def _appearance(errors: dict[str, object], data: dict[str, Any]) -> None:
    """Logo, colours, custom CSS, footer, theme and response times, each checked in place."""
    if "logo" in data:
        _logo(errors, data)
    if "colors" in data:
        colors = data["colors"] if data["colors"] is not None else {}
        if not isinstance(colors, dict):
            errors["colors"] = f"must be an object with any of {', '.join(COLOR_KEYS)}"
        else:
            for key, value in colors.items():
                if key not in COLOR_KEYS:
                    errors[f"colors.{key}"] = f"unknown colour; one of {', '.join(COLOR_KEYS)}"
                elif not isinstance(value, str) or not COLOR.match(value):
                    errors[f"colors.{key}"] = "must be a hex colour such as #1a7f37"
            data["colors"] = {k: str(v).lower() for k, v in colors.items()}
    if "custom_css" in data:
        css = data["custom_css"] if data["custom_css"] is not None else ""
        if not isinstance(css, str) or len(css) > CSS_MAX:
            errors["custom_css"] = f"must be a string of at most {CSS_MAX} characters"
        elif problem := css_problem(css):
            errors["custom_css"] = problem
        else:
            data["custom_css"] = css
    if "footer_text" in data:
        if data["footer_text"] is None:
            data["footer_text"] = ""
        _text(errors, data, "footer_text", 0, 1000)
    if "theme" in data and data["theme"] not in THEMES:
        errors["theme"] = f"must be one of {', '.join(THEMES)}"
    if "show_response_times" in data and not isinstance(data["show_response_times"], bool):
        errors["show_response_times"] = "must be true or false"


def css_problem(css: str) -> str | None:
    """Why `css` is refused, or None. It is served as a stylesheet of its own under the
    page's Content-Security-Policy (no other origin, no script), so it cannot break out of
    a <style> element; '<' (never needed in CSS) and @import are refused all the same, and
    control characters but tab and newlines."""
    if "<" in css:
        return "must not contain '<'"
    if "@import" in css.lower():
        return "must not contain @import"
    if any(ord(ch) < 32 and ch not in "\t\r\n" for ch in css):
        return "must not contain control characters"
    return None


def _logo(errors: dict[str, object], data: dict[str, Any]) -> None:
    """A data URL (data:image/png;base64,...) into `logo` bytes and `logo_type`; null removes."""
    raw = data["logo"]
    if raw is None:
        data["logo_type"] = None
        return
    kinds = ", ".join(_LOGO_MAGIC)
    head, sep, body = raw.partition(",") if isinstance(raw, str) else ("", "", "")
    mime = head.removeprefix("data:").removesuffix(";base64")
    if not sep or not head.startswith("data:") or not head.endswith(";base64") or mime not in _LOGO_MAGIC:
        errors["logo"] = f"must be a base64 data URL of one of {kinds} (null removes it)"
        return
    try:
        image = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        errors["logo"] = "is not valid base64"
        return
    if not image or len(image) > LOGO_MAX:
        errors["logo"] = f"must be 1 byte to {LOGO_MAX // 1024} KiB"
    elif not image.lstrip().startswith(_LOGO_MAGIC[mime]) or (
        mime == "image/webp" and image[8:12] != b"WEBP"
    ):
        errors["logo"] = f"the image is not {mime}"
    else:
        data["logo"], data["logo_type"] = image, mime


def _incident(errors: dict[str, object], data: dict[str, Any]) -> None:
    status = data.get("incident_status")
    if status is not None and status not in INCIDENT_STATES:
        errors["incident_status"] = f"must be one of {', '.join(INCIDENT_STATES)}"
    message = data.get("incident_message")
    if message is not None and (not isinstance(message, str) or not 1 <= len(message.strip()) <= 5000):
        errors["incident_message"] = "must be a string of 1 to 5000 characters"
    if (status is None) != (message is None) and ("incident_status" in data or "incident_message" in data):
        errors["incident_status" if status is None else "incident_message"] = (
            "incident_status and incident_message go together"
        )


def validate_post(body: Any, *, update: bool) -> dict[str, Any]:
    """A new post {title, status, message} or an update {status, message}."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    allowed = {"status", "message", "body"} | (set() if update else {"title", "name"})
    errors: dict[str, object] = {k: "unknown field" for k in body if k not in allowed}
    status = body.get("status", "investigating")
    if status not in INCIDENT_STATES:
        errors["status"] = f"must be one of {', '.join(INCIDENT_STATES)}"
    message = body.get("message", body.get("body"))
    if not isinstance(message, str) or not 1 <= len(message.strip()) <= 5000:
        errors["message"] = "required: a string of 1 to 5000 characters"
    title = body.get("title", body.get("name"))
    if not update and (not isinstance(title, str) or not 1 <= len(title.strip()) <= 200):
        errors["title"] = "required: a string of 1 to 200 characters"
    if errors:
        raise ValidationError(errors)
    out = {"status": status, "message": str(message).strip()}
    if not update:
        out["title"] = str(title).strip()
    return out


def components(body: dict[str, Any], known: set[int]) -> list[int] | None:
    """The components a subscription asks for (`components`: ids of the page's components;
    absent, null or empty: all of them, None)."""
    raw = body.get("components")
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list) or len(raw) > 500:
        raise ValidationError({"components": "must be a list of component ids of this page"})
    bad = [i for i, c in enumerate(raw) if isinstance(c, bool) or not isinstance(c, int) or c not in known]
    if bad:
        raise ValidationError({f"components[{i}]": "not a component of this page" for i in bad})
    return sorted(set(raw))


def subscription(body: Any) -> tuple[str, str]:
    """(kind, address) of a visitor's subscription: {"email"} or {"webhook_url"} (aliases
    "webhook", "url"), optionally with `components` (see `components`). The address's
    syntax only; a webhook's destination is checked apart."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    unknown = set(body) - {"email", "webhook_url", "webhook", "url", "components"}
    if unknown:
        raise ValidationError({k: "unknown field" for k in unknown})
    email = body.get("email")
    url = body.get("webhook_url", body.get("webhook", body.get("url")))
    if (email is None) == (url is None):
        raise ValidationError({"email": "give either email or webhook_url"})
    if email is not None:
        if not isinstance(email, str) or len(email) > 254 or not EMAIL.match(email.strip()):
            raise ValidationError({"email": "must be an email address"})
        return "email", email.strip().lower()
    if not isinstance(url, str) or len(url) > 2000 or not url.startswith(("http://", "https://")):
        raise ValidationError({"webhook_url": "must be an http or https URL"})
    return "webhook", url
