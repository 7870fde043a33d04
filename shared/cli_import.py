"""`probefleet import kuma|gatus`: another tool's configuration in our file format
(docs/config-as-code.md), with a report of everything that could not be mapped.

- Uptime Kuma: the JSON backup (Settings > Backup; `monitorList` and `notificationList`).
- Gatus: its YAML configuration (`endpoints`, `external-endpoints`, `alerting`).

Secrets found in the source (webhook URLs, bot tokens, passwords) are not copied: the
file gets `${env:NAME}` references and the report names each variable and where its
value is in the source, so the output can go into version control as it is.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from probefleet.shared.cli_connect import EXIT_USAGE

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class Imported:
    """The file's sections, and one line per thing left out or changed on the way."""

    monitors: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("channels", "monitors", "heartbeats"):
            if items := getattr(self, name):
                out[name] = items
        return out


def _env_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_").upper() for p in parts if p)


def _secret(out: Imported, prefix: str, owner: str, field_name: str, where: str) -> str:
    name = _env_name(prefix, owner, field_name)
    out.secrets.append(f"{name}: {where}")
    return f"${{env:{name}}}"


def _seconds(text: object) -> float | None:
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = _DURATION.match(str(text).strip())
    return float(m.group(1)) * _SECONDS[m.group(2)] if m else None


def _unique(name: str, taken: set[str]) -> str:
    key, n = name, 2
    while key in taken:
        key, n = f"{name} ({n})", n + 1
    taken.add(key)
    return key


# ---- Uptime Kuma ---------------------------------------------------------------------------

# Kuma notification type -> (our kind, {our field: Kuma field}, secret fields of ours).
KUMA_NOTIFICATIONS: dict[str, tuple[str, dict[str, str], set[str]]] = {
    "slack": ("slack", {"url": "slackwebhookURL"}, {"url"}),
    "discord": ("discord", {"url": "discordWebhookUrl"}, {"url"}),
    "teams": ("teams", {"url": "webhookUrl"}, {"url"}),
    "webhook": ("webhook", {"url": "webhookURL"}, {"url"}),
    "telegram": ("telegram", {"bot_token": "telegramBotToken", "chat_id": "telegramChatID"}, {"bot_token"}),
    "ntfy": (
        "ntfy",
        {"topic": "ntfytopic", "server_url": "ntfyserverurl", "token": "ntfyaccesstoken"},
        {"token"},
    ),
    "PagerDuty": ("pagerduty", {"routing_key": "pagerdutyIntegrationKey"}, {"routing_key"}),
    "Opsgenie": ("opsgenie", {"api_key": "opsgenieApiKey"}, {"api_key"}),
    "smtp": (
        "email",
        {
            "host": "smtpHost",
            "port": "smtpPort",
            "from": "smtpFrom",
            "to": "smtpTo",
            "username": "smtpUsername",
            "password": "smtpPassword",
        },
        {"password"},
    ),
}
KUMA_UNSUPPORTED = {
    "group": "a group has no check of its own; its children keep their checks, without the parent",
    "docker": "container state is not checked by probes",
    "mqtt": "MQTT is not a probe kind",
    "sqlserver": "database queries are not a probe kind",
    "postgres": "database queries are not a probe kind",
    "mysql": "database queries are not a probe kind",
    "mongodb": "database queries are not a probe kind",
    "redis": "database queries are not a probe kind",
    "radius": "RADIUS is not a probe kind",
    "grpc-keyword": "gRPC is not a probe kind",
    "gamedig": "game servers are not a probe kind",
    "steam": "game servers are not a probe kind",
    "real-browser": "browser checks are not a probe kind",
    "kafka-producer": "Kafka is not a probe kind",
    "tailscale-ping": "Tailscale ping is not a probe kind",
}


def _kuma_status(codes: list[str], name: str, out: Imported) -> list[int | str]:
    """'200-299' is 2xx; a single code stays; other ranges are widened to their classes."""
    result: list[int | str] = []
    for code in codes:
        low, _, high = str(code).partition("-")
        if not high and low.isdigit():
            result.append(int(low))
        elif (
            low.isdigit()
            and high.isdigit()
            and low[0] == high[0]
            and low.endswith("00")
            and high.endswith("99")
        ):
            result.append(f"{low[0]}xx")
        elif low.isdigit() and high.isdigit():
            classes = [f"{c}xx" for c in range(int(low[0]), int(high[0]) + 1)]
            out.report.append(f"monitor {name!r}: accepted status {code} widened to {', '.join(classes)}")
            result.extend(classes)
        else:
            out.report.append(f"monitor {name!r}: accepted status {code!r} not understood, left out")
    return list(dict.fromkeys(result)) or ["2xx"]


def from_kuma(backup: dict[str, Any]) -> Imported:
    out = Imported()
    taken_channels: set[str] = set()
    channel_of: dict[int, str] = {}
    for n in backup.get("notificationList") or []:
        try:
            config = json.loads(n.get("config") or "{}")
        except (TypeError, ValueError):
            config = {}
        kuma_type = str(config.get("type") or n.get("type") or "")
        name = str(n.get("name") or f"notification {n.get('id')}")
        if kuma_type not in KUMA_NOTIFICATIONS:
            out.report.append(f"notification {name!r}: type {kuma_type!r} has no channel kind here, left out")
            continue
        kind, fields, secret = KUMA_NOTIFICATIONS[kuma_type]
        key = _unique(name, taken_channels)
        ours: dict[str, Any] = {}
        for our_field, their_field in fields.items():
            value = config.get(their_field)
            if value in (None, ""):
                continue
            if our_field in secret:
                value = _secret(out, "KUMA", key, our_field, f"notification {name!r}, field {their_field}")
            elif our_field == "to":
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            ours[our_field] = value
        out.channels.append(
            {"name": key, "kind": kind, "config": ours, "is_enabled": bool(n.get("active", True))}
        )
        channel_of[int(n["id"])] = key
    monitors = backup.get("monitorList") or []
    names = {int(m["id"]): str(m.get("name") or f"monitor {m['id']}") for m in monitors if "id" in m}
    taken: set[str] = set()
    keys = {mid: _unique(name, taken) for mid, name in names.items()}
    skipped: set[int] = set()
    for m in monitors:
        mid = int(m.get("id", 0))
        name = keys.get(mid, str(m.get("name")))
        kind = str(m.get("type") or "http")
        if kind in KUMA_UNSUPPORTED:
            out.report.append(f"monitor {name!r}: type {kind!r} left out: {KUMA_UNSUPPORTED[kind]}")
            skipped.add(mid)
            continue
        entry = _kuma_monitor(m, name, kind, out)
        if entry is None:
            skipped.add(mid)
            continue
        parent = m.get("parent")
        if parent is not None and int(parent) in keys and int(parent) not in skipped:
            entry["parent"] = keys[int(parent)]
        channels = [
            channel_of[int(i)]
            for i, on in (m.get("notificationIDList") or {}).items()
            if on and int(i) in channel_of
        ]
        if channels:
            entry["notifications"] = channels
        tags = [
            f"{t['name']}:{t['value']}" if t.get("value") else str(t["name"])
            for t in m.get("tags") or []
            if isinstance(t, dict) and t.get("name")
        ]
        if tags:
            entry["tags"] = tags
        if not m.get("active", True):
            entry["is_enabled"] = False
        if m.get("upsideDown"):
            out.report.append(
                f"monitor {name!r}: upside-down mode (up when failing) has no equivalent;"
                " imported as a normal check"
            )
        (out.heartbeats if kind == "push" else out.monitors).append(entry)
    # A child of a group (left out) or of a skipped monitor loses its parent; said once each.
    for m in monitors:
        parent = m.get("parent")
        if parent is not None and int(parent) in skipped and int(m.get("id", 0)) not in skipped:
            out.report.append(
                f"monitor {keys.get(int(m['id']))!r}: parent {names.get(int(parent))!r} was left out,"
                " so it has none"
            )
    return out


def _kuma_monitor(m: dict[str, Any], name: str, kind: str, out: Imported) -> dict[str, Any] | None:
    entry: dict[str, Any] = {"name": name}
    interval = int(m.get("interval") or 60)
    if kind == "push":
        grace = int(m.get("retryInterval") or interval) * max(int(m.get("maxretries") or 0), 1)
        return {**entry, "run_interval": interval, "grace_period": min(grace, 366 * 86400)}
    entry["check_interval"] = min(max(interval, 1), 86400)
    timeout = m.get("timeout")
    if isinstance(timeout, int | float) and timeout > 0:
        entry["timeout"] = min(float(timeout), 120.0)
    retries = int(m.get("maxretries") or 0)
    if retries:
        entry["retry_count"] = min(retries, 20)
    host = m.get("hostname")
    if kind in ("http", "keyword", "json-query"):
        entry.update(type="http", url=m.get("url"))
        if (method := str(m.get("method") or "GET").upper()) != "GET":
            entry["method"] = method
        if m.get("body"):
            entry["body"] = m["body"]
        if m.get("headers"):
            try:
                headers = json.loads(m["headers"])
                if isinstance(headers, dict) and headers:
                    entry["headers"] = {str(k): str(v) for k, v in headers.items()}
            except ValueError:
                out.report.append(f"monitor {name!r}: headers are not JSON, left out")
        codes = m.get("accepted_statuscodes") or ["200-299"]
        entry["expected_status"] = _kuma_status(codes, name, out)
        if m.get("ignoreTls"):
            entry["verify_tls"] = False
        if m.get("maxredirects") == 0:
            entry["follow_redirects"] = False
        if kind == "keyword" and m.get("keyword"):
            entry["excluded_content" if m.get("invertKeyword") else "expected_content"] = m["keyword"]
        if kind == "json-query" and m.get("jsonPath"):
            path = str(m["jsonPath"])
            entry["json_assertions"] = [
                {
                    "path": path if path.startswith("$") else f"$.{path}",
                    "op": "equals",
                    "value": m.get("expectedValue"),
                }
            ]
        if m.get("basic_auth_user"):
            entry["basic_auth"] = [
                m["basic_auth_user"],
                _secret(out, "KUMA", name, "password", f"monitor {name!r}, field basic_auth_pass"),
            ]
        if m.get("expiryNotification"):
            out.report.append(
                f"monitor {name!r}: certificate expiry notice: add a tls monitor for"
                f" {urlsplit(str(m.get('url'))).hostname}"
            )
        return entry
    if kind == "port":
        return {**entry, "type": "tcp", "host": host, "port": int(m.get("port") or 0)}
    if kind == "ping":
        return {**entry, "type": "icmp", "host": host}
    if kind == "dns":
        entry.update(type="dns", domain=host, record_type=str(m.get("dns_resolve_type") or "A").upper())
        if m.get("dns_resolve_server"):
            entry["resolver"] = m["dns_resolve_server"]
        return entry
    out.report.append(f"monitor {name!r}: type {kind!r} is not known here, left out")
    return None


# ---- Gatus ----------------------------------------------------------------------------------

# Gatus alert provider -> (our kind, {our field: Gatus field}, secret fields of ours).
GATUS_ALERTING: dict[str, tuple[str, dict[str, str], set[str]]] = {
    "slack": ("slack", {"url": "webhook-url"}, {"url"}),
    "discord": ("discord", {"url": "webhook-url"}, {"url"}),
    "teams": ("teams", {"url": "webhook-url"}, {"url"}),
    "teams-workflows": ("teams", {"url": "webhook-url"}, {"url"}),
    "telegram": ("telegram", {"bot_token": "token", "chat_id": "id"}, {"bot_token"}),
    "ntfy": ("ntfy", {"topic": "topic", "server_url": "url", "token": "token"}, {"token"}),
    "pagerduty": ("pagerduty", {"routing_key": "integration-key"}, {"routing_key"}),
    "opsgenie": ("opsgenie", {"api_key": "api-key"}, {"api_key"}),
    "custom": ("webhook", {"url": "url", "method": "method"}, {"url"}),
    "email": (
        "email",
        {
            "host": "host",
            "port": "port",
            "from": "from",
            "to": "to",
            "username": "username",
            "password": "password",
        },
        {"password"},
    ),
}
_CONDITION = re.compile(r"^\s*\[([A-Z_]+)\]((?:\.[\w.\[\]]+)?)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


def from_gatus(config: dict[str, Any]) -> Imported:
    out = Imported()
    alerting = config.get("alerting") or {}
    channel_of: dict[str, str] = {}
    for provider, settings in alerting.items():
        if provider not in GATUS_ALERTING or not isinstance(settings, dict):
            out.report.append(f"alerting {provider!r}: no channel kind here, left out")
            continue
        kind, fields, secret = GATUS_ALERTING[provider]
        ours: dict[str, Any] = {}
        for our_field, their_field in fields.items():
            value = settings.get(their_field)
            if value in (None, ""):
                continue
            if our_field in secret:
                value = _secret(out, "GATUS", provider, our_field, f"alerting.{provider}.{their_field}")
            elif our_field == "to":
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            elif our_field == "method":
                value = str(value).upper()
            ours[our_field] = value
        out.channels.append({"name": provider, "kind": kind, "config": ours})
        channel_of[provider] = provider
    taken: set[str] = set()
    for e in config.get("endpoints") or []:
        if not isinstance(e, dict) or not e.get("name"):
            out.report.append("an endpoint without a name, left out")
            continue
        name = _unique(str(e["name"]), taken)
        entry = _gatus_endpoint(e, name, out)
        if entry is None:
            continue
        alerts = [str(a.get("type")) for a in e.get("alerts") or [] if isinstance(a, dict)]
        channels = [channel_of[a] for a in alerts if a in channel_of]
        if channels:
            entry["notifications"] = list(dict.fromkeys(channels))
        for a in e.get("alerts") or []:
            if isinstance(a, dict) and (a.get("failure-threshold") or 0) > 1:
                entry["retry_count"] = min(int(a["failure-threshold"]) - 1, 20)
            if isinstance(a, dict) and (a.get("success-threshold") or 0) > 1:
                entry["recovery_count"] = min(int(a["success-threshold"]), 20)
        out.monitors.append(entry)
    for e in config.get("external-endpoints") or []:
        if not isinstance(e, dict) or not e.get("name"):
            continue
        name = _unique(str(e["name"]), taken)
        beat: dict[str, Any] = {"name": name}
        interval = (
            _seconds((e.get("heartbeat") or {}).get("interval"))
            if isinstance(e.get("heartbeat"), dict)
            else None
        )
        if interval:
            beat["run_interval"] = int(interval)
        else:
            beat["run_interval"] = 3600
            out.report.append(
                f"external endpoint {name!r}: no heartbeat interval; 1 h assumed, set run_interval"
            )
        if e.get("group"):
            beat["tags"] = [str(e["group"])]
        out.heartbeats.append(beat)
    return out


def _gatus_endpoint(e: dict[str, Any], name: str, out: Imported) -> dict[str, Any] | None:
    url = str(e.get("url") or "")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    entry: dict[str, Any] = {"name": name}
    if isinstance(e.get("dns"), dict):
        dns = e["dns"]
        entry.update(
            type="dns", domain=dns.get("query-name"), record_type=str(dns.get("query-type") or "A").upper()
        )
        entry["resolver"] = url.split("://", 1)[-1].split(":")[0]
    elif scheme in ("http", "https"):
        entry.update(type="http", url=url)
        if e.get("method"):
            entry["method"] = str(e["method"]).upper()
        if e.get("body"):
            entry["body"] = str(e["body"])
        if isinstance(e.get("headers"), dict) and e["headers"]:
            entry["headers"] = {str(k): str(v) for k, v in e["headers"].items()}
    elif scheme in ("tcp", "udp", "tls"):
        parts = urlsplit(url)
        entry.update(type=scheme, host=parts.hostname)
        if parts.port:
            entry["port"] = parts.port
    elif scheme == "icmp":
        entry.update(type="icmp", host=url.split("://", 1)[1].strip("/"))
    else:
        out.report.append(
            f"endpoint {name!r}: {url!r} is not a kind probes check"
            " (http, tcp, udp, tls, icmp, dns), left out"
        )
        return None
    if (interval := _seconds(e.get("interval", "60s"))) is not None:
        entry["check_interval"] = min(max(int(interval), 1), 86400)
    client: dict[str, Any] = e["client"] if isinstance(e.get("client"), dict) else {}
    if (timeout := _seconds(client.get("timeout"))) is not None:
        entry["timeout"] = min(timeout, 120.0)
    if client.get("insecure") and entry["type"] == "http":
        entry["verify_tls"] = False
    if e.get("group"):
        entry["tags"] = [str(e["group"])]
    if e.get("enabled") is False:
        entry["is_enabled"] = False
    for condition in e.get("conditions") or []:
        _gatus_condition(str(condition), entry, name, out)
    return entry


def _gatus_condition(condition: str, entry: dict[str, Any], name: str, out: Imported) -> None:
    m = _CONDITION.match(condition)
    left_out = f"endpoint {name!r}: condition {condition!r} has no equivalent, left out"
    if not m:
        out.report.append(left_out)
        return
    placeholder, path, op, value = m.group(1), m.group(2), m.group(3), m.group(4).strip().strip('"')
    kind = entry["type"]
    if placeholder == "STATUS" and kind == "http":
        if op == "==" and value.isdigit():
            entry.setdefault("expected_status", []).append(int(value))
        elif op == "<" and value in ("300", "400"):
            entry["expected_status"] = ["2xx"] if value == "300" else ["2xx", "3xx"]
        else:
            out.report.append(left_out)
    elif placeholder == "RESPONSE_TIME" and op in ("<", "<=") and value.isdigit():
        entry["degraded_ms"] = float(value)
        out.report.append(
            f"endpoint {name!r}: {condition!r} marks the monitor degraded (not down) when slower"
        )
    elif (
        placeholder == "BODY"
        and kind == "http"
        and not path
        and op == "=="
        and value.startswith("pat(*")
        and value.endswith("*)")
    ):
        entry["expected_content"] = value[5:-2]
    elif placeholder == "BODY" and kind == "http" and path and op in ("==", "!="):
        typed: Any = int(value) if value.isdigit() else {"true": True, "false": False}.get(value, value)
        entry.setdefault("json_assertions", []).append(
            {"path": "$" + path, "op": "equals" if op == "==" else "not_equals", "value": typed}
        )
    elif placeholder == "CONNECTED" and value == "true":
        pass  # what every tcp, udp and tls check asserts anyway
    elif placeholder == "DNS_RCODE" and kind == "dns" and op == "==":
        entry["expected_rcode"] = value
    elif placeholder == "CERTIFICATE_EXPIRATION" and kind == "tls" and op == ">":
        seconds = _seconds(value)
        if seconds:
            entry["warn_days"] = max(int(seconds // 86400), 1)
    else:
        out.report.append(left_out)


# ---- the command -----------------------------------------------------------------------------


@click.command("import")
@click.argument("source", type=click.Choice(["kuma", "gatus"]))
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout."
)
def import_config(source: str, path: Path, out: Path | None) -> None:
    """Convert an Uptime Kuma JSON backup or a Gatus YAML config into a probefleet file.
    What could not be mapped, and the secrets to set as variables, go to stderr."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if source == "kuma" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        click.echo(f"error: {path}: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if not isinstance(data, dict):
        click.echo(
            f"error: {path}: not a {'Kuma backup' if source == 'kuma' else 'Gatus configuration'}", err=True
        )
        sys.exit(EXIT_USAGE)
    result = from_kuma(data) if source == "kuma" else from_gatus(data)
    body = f"# imported from {source}: {path.name}; see the report printed with it\n"
    body += yaml.safe_dump(result.document(), sort_keys=False, allow_unicode=True, width=110)
    if out is None:
        click.echo(body, nl=False)
    else:
        out.write_text(body, encoding="utf-8")
    counts = (
        f"{len(result.monitors)} monitor(s), {len(result.heartbeats)} heartbeat(s),"
        f" {len(result.channels)} channel(s)"
    )
    click.echo(f"imported {counts}" + (f" to {out}" if out else ""), err=True)
    if result.secrets:
        click.echo("set these variables before applying (the values are in the source):", err=True)
        for line in result.secrets:
            click.echo(f"  {line}", err=True)
    if result.report:
        click.echo(f"not mapped ({len(result.report)}):", err=True)
        for line in result.report:
            click.echo(f"  {line}", err=True)
