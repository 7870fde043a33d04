"""Monitor configuration: API input to a validated config and back.

A monitor's public shape is flat: common fields (name, type, timeout, ...) beside the
fields of its kind's spec (url, method, host, port, ...). The same flat shape is
accepted on input, so a PATCH is "merge into the current shape, validate again".
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from probefleet.controller.engine.consensus import MODES
from probefleet.controller.monitors import heartbeat
from probefleet.controller.validation import ValidationError, from_msgspec
from probefleet.shared import wire
from probefleet.shared.redact import REDACTED, redact_headers, redact_url, restore_url

SPEC_TYPES: dict[str, type[msgspec.Struct]] = {
    "http": wire.HttpSpec,
    "tcp": wire.TcpSpec,
    "udp": wire.UdpSpec,
    "icmp": wire.IcmpSpec,
    "dns": wire.DnsSpec,
    "tls": wire.TlsSpec,
    "api_flow": wire.ApiFlowSpec,
    "websocket": wire.WebsocketSpec,
    "grpc": wire.GrpcSpec,
    "ssh": wire.SshSpec,
    "postgres": wire.PostgresSpec,
    "mysql": wire.MysqlSpec,
    "redis": wire.RedisSpec,
    "smtp": wire.SmtpSpec,
    "imap": wire.ImapSpec,
    "pop3": wire.Pop3Spec,
    "mqtt": wire.MqttSpec,
    "browser": wire.BrowserSpec,
}
# Kinds that connect to a host and port: a `url` (or `target`) gives both.
HOST_PORT_KINDS = ("grpc", "ssh", "postgres", "mysql", "redis", "smtp", "imap", "pop3", "mqtt")
KINDS: tuple[str, ...] = (*SPEC_TYPES, "heartbeat")

# Type names used by the reference services, mapped onto our kinds.
TYPE_ALIASES = {
    "website": "http",
    "https": "http",
    "api": "http",
    "graphql": "http",
    "keyword": "http",
    "ping": "icmp",
    "port": "tcp",
    "ssl": "tls",
    "ssl_cert": "tls",
    "cron": "heartbeat",
    "push": "heartbeat",
    "tcp_port": "tcp",
    "udp_port": "udp",
    "certificate": "tls",
}

# Field names used by the reference services, mapped onto ours.
FIELD_ALIASES = {
    "target": "url",
    "interval": "check_interval",
    "interval_seconds": "check_interval",
    "checkInterval": "check_interval",
    "regions": "locations",
    "enabledRegions": "locations",
    "expectedStatusCode": "expected_status",
    "httpMethod": "method",
    "isActive": "is_enabled",
    "enabled": "is_enabled",
    "timeout_seconds": "timeout",
    "isPaused": "is_enabled",
    "is_active": "is_enabled",
    "active": "is_enabled",
    "expectedStatus": "expected_status",
    "expected_status_code": "expected_status",
    "expected_status_codes": "expected_status",
    "http_method": "method",
    "timeoutSeconds": "timeout",
    "intervalSeconds": "check_interval",
    "frequency": "check_interval",
    "monitor_type": "type",
    "monitorType": "type",
    "kind": "type",
    "hostname": "host",
    "parentId": "parent_id",
    "retryCount": "retry_count",
    "recoveryCount": "recovery_count",
    "escalationPolicy": "escalation_policy",
    "escalation_policy_id": "escalation_policy",
    "verify_ssl": "verify_tls",
    "verifySsl": "verify_tls",
    "requestHeaders": "headers",
    "requestBody": "body",
    "dnsRecord": "record_type",
    "sslCertExpiryDays": "warn_days",
    "gracePeriod": "grace_period",
}

# Monitor types of the reference services that probefleet does not run, with the reason
# a 422 gives.
UNSUPPORTED_TYPES = {
    "whois": "WHOIS monitors are not supported: probefleet checks that services answer, not"
    " domain registrations; a tls monitor warns before a certificate expires",
    "blacklist": "BLACKLIST monitors are not supported: probefleet checks that services answer,"
    " not whether an address is on a block list",
    "diagnose": "diagnose is not a monitor type: the regions that see a monitor fail run it"
    " by themselves when it goes down, and its incident shows what they found",
}

# Spec fields whose wire name collides with a common field get another API name:
# a DNS query's `name` would clash with the monitor's name, ICMP's `interval` with
# the check interval alias.
SPEC_API_NAMES: dict[str, dict[str, str]] = {"dns": {"name": "domain"}, "icmp": {"interval": "ping_interval"}}
# Where a non-HTTP kind receives `url` (or its alias `target`), it means this field.
TARGET_FIELD = {"tcp": "host", "udp": "host", "icmp": "host", "tls": "host", "dns": "domain"}
TARGET_FIELD.update(dict.fromkeys(HOST_PORT_KINDS, "host"))

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Tag = Annotated[str, Meta(min_length=1, max_length=64)]

PolicyRef = Annotated[int, Meta(ge=1)] | Annotated[str, Meta(min_length=1, max_length=200)]


class MonitorCommon(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    type: str = "http"
    timeout: Annotated[float, Meta(gt=0, le=120)] = 10.0
    check_interval: Annotated[int, Meta(ge=1, le=86400)] = 60
    locations: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(max_length=64)] | None = None
    consensus: str = "majority"
    quorum: Annotated[int, Meta(ge=1, le=64)] | None = None
    retry_count: Annotated[int, Meta(ge=0, le=20)] = 0
    recovery_count: Annotated[int, Meta(ge=1, le=20)] = 1
    is_enabled: bool = True
    tags: Annotated[list[Tag], Meta(max_length=50)] = []
    parent_id: Annotated[int, Meta(ge=1)] | None = None
    incident_on_degraded: bool = False
    # Channel ids to notify, or channel URLs that the API turns into ids
    # (controller/notifications/channel_urls.py); 422 for ids of no channel.
    notifications: Annotated[
        list[Annotated[int, Meta(ge=1)] | Annotated[str, Meta(min_length=1, max_length=2048)]],
        Meta(max_length=50),
    ] = []
    # A notification rule, by id or name; the API resolves a name to the rule's id before
    # storing.
    escalation_policy: PolicyRef | None = None
    project: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


COMMON_FIELDS = frozenset(MonitorCommon.__struct_fields__)


class MonitorConfig(msgspec.Struct, kw_only=True):
    """A validated monitor configuration, ready to store."""

    name: str
    kind: str
    spec: wire.CheckSpec | None
    interval_s: int
    timeout_s: float
    locations: list[str]
    consensus: str
    quorum: int | None
    retry_count: int
    recovery_count: int
    enabled: bool
    tags: list[str]
    parent_id: int | None = None
    incident_on_degraded: bool = False
    notifications: list[int | str] = []  # only ids once the API resolved the URLs
    project: str | None = None
    escalation_policy: int | str | None = None


def normalize(data: dict[str, Any]) -> dict[str, Any]:
    """Apply field and type aliases; the canonical name wins when both are given."""
    # A body may nest the kind's settings in `config`; flat fields win.
    if isinstance(data.get("config"), dict):
        data = {**data["config"], **{k: v for k, v in data.items() if k != "config"}}
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = FIELD_ALIASES.get(key, key)
        if canonical == "is_enabled" and key == "isPaused" and isinstance(value, bool):
            value = not value
        if canonical in out and canonical != key:
            continue
        out[canonical] = value
    if isinstance(out.get("type"), str):
        t = out["type"].lower()
        out["type"] = TYPE_ALIASES.get(t, t)
    # A port monitor may carry its protocol beside the type (type PORT, protocol UDP).
    if out.get("type") == "tcp" and str(out.get("protocol", "")).lower() == "udp":
        out["type"] = "udp"
    if out.get("type") in ("tcp", "udp"):
        out.pop("protocol", None)
    kind = out.get("type")
    if kind == "heartbeat" and "target" in data and "url" not in data:
        # Some clients require a target for every type; a heartbeat has none (its job pings it).
        out.pop("url", None)
    if isinstance(kind, str) and kind in TARGET_FIELD and "url" in out:
        host, port = _host_port(out.pop("url"), with_port=kind in ("tcp", "udp", "tls", *HOST_PORT_KINDS))
        out.setdefault(TARGET_FIELD[kind], host)
        if port is not None:
            out.setdefault("port", port)
    # One expected status may come as a bare number.
    if isinstance(out.get("expected_status"), int | str):
        out["expected_status"] = [out["expected_status"]]
    if isinstance(out.get("record_type"), str):
        out["record_type"] = out["record_type"].upper()
    if isinstance(out.get("headers"), str):
        out["headers"] = _headers_json(out["headers"])
    if "json_path" in out or "expected_json_value" in out:
        out["json_assertions"] = _json_assertions(out)
    return out


def _headers_json(text: str) -> object:
    """Headers given as a JSON string of an object (requestHeaders)."""
    try:
        headers = msgspec.json.decode(text)
    except msgspec.DecodeError:
        headers = None
    if not isinstance(headers, dict):
        raise ValidationError({"headers": "must be an object, or a JSON string of one"})
    return headers


def _json_assertions(out: dict[str, Any]) -> object:
    """`json_path` with an optional `expected_json_value`, as one more JSON assertion: the
    value at the path equals it, or (without a value) the path exists."""
    path = out.pop("json_path", None)
    missing = object()
    value = out.pop("expected_json_value", missing)
    if not isinstance(path, str) or not path:
        raise ValidationError({"json_path": "required with expected_json_value: a path such as $.status"})
    assertion = (
        {"path": path, "op": "exists"} if value is missing else {"path": path, "op": "equals", "value": value}
    )
    current = out.get("json_assertions", [])
    return [*current, assertion] if isinstance(current, list) else current


def _host_port(target: object, *, with_port: bool) -> tuple[object, int | None]:
    """The host of a target, and its port when the kind has one and the target names it:
    'tcp://db:5432', 'db:5432' and '[::1]:53' give the port, 'https://example.com/' only the host."""
    if not isinstance(target, str):
        return target, None
    text = target if "://" in target else f"//{target}" if with_port and ":" in target else None
    if text is None:
        return target, None
    try:
        parts = urlsplit(text)
        port = parts.port if with_port else None
    except ValueError:  # "tcp://[::1" or a port out of range: the spec's check names the field
        return _host_of(target), None
    return parts.hostname or target, port


def _host_of(target: object) -> object:
    """'tcp://db:5432' or 'https://example.com/' -> the host; anything else unchanged."""
    if isinstance(target, str) and "://" in target:
        try:
            return urlsplit(target).hostname or target
        except ValueError:  # "tcp://[::1": the spec's check names the field
            return target
    return target


# Limits of a monitor's spec (docs/api.md, "Limits"): what a probe is sent every interval
# stays small, and nothing the model accepts can make a probe fail on its own request.
MAX_URL = 2048
MAX_HEADERS = 50
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8 * 1024
MAX_BODY = 64 * 1024
MAX_TEXT = 64 * 1024  # ca_pem, expected/excluded content, graphql_query, send/expect
MAX_LIST = 50  # expected_status, json_assertions, expected_values, secret_* names
MAX_SECRET = 4096  # bearer_token, each half of basic_auth
MAX_SPEC_BYTES = 256 * 1024  # the whole spec as a probe receives it (msgpack)
# Headers that frame the message or manage the connection: the HTTP client sets them, a
# user value would corrupt the request (RFC 9110 7.6.1, RFC 9112 6). Host is allowed (a
# virtual host behind an address), and sent once, instead of the URL's.
FORBIDDEN_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    }
)
# RFC 9110 5.6.2 token: what a header name may be made of.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _control(text: str, *, tab: bool = False) -> bool:
    """Whether `text` holds a control character (CR, LF, NUL, ...), which would split or
    cut a request line or header."""
    return any((ord(c) < 0x20 and not (tab and c == "\t")) or ord(c) == 0x7F for c in text)


def _check_url(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if _control(url) or " " in url:
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        return "must be a valid URL"
    if parts.scheme not in schemes and schemes == ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.scheme not in schemes:
        return "must be a " + " or ".join(f"{s}://" for s in schemes) + " URL"
    if not parts.hostname:
        return "must include a host"
    try:
        port = parts.port
    except ValueError:  # not a number, or beyond 65535
        port = 0
    if port == 0:
        return "port must be between 1 and 65535"
    return None


def _check_headers(headers: dict[str, str]) -> dict[str, object]:
    errors: dict[str, object] = {}
    if len(headers) > MAX_HEADERS:
        return {"headers": f"must have at most {MAX_HEADERS} headers"}
    seen: set[str] = set()
    for name, value in headers.items():
        field = f"headers.{name[:MAX_HEADER_NAME]}"
        if not name or len(name) > MAX_HEADER_NAME or not set(name) <= _TOKEN:
            errors[field] = (
                f"name must be 1 to {MAX_HEADER_NAME} token characters"
                " (no spaces, colons or control characters)"
            )
        elif name.lower() in FORBIDDEN_HEADERS:
            errors[field] = "is set by the HTTP client and cannot be configured"
        elif name.lower() in seen:
            errors[field] = "is given twice (header names are case-insensitive)"
        elif len(value) > MAX_HEADER_VALUE:
            errors[field] = f"value must be at most {MAX_HEADER_VALUE} characters"
        elif _control(value, tab=True):
            errors[field] = "value must not contain CR, LF, NUL or other control characters"
        seen.add(name.lower())
    return errors


def _check_http(spec: wire.HttpSpec) -> dict[str, object]:
    errors: dict[str, object] = {}
    if problem := _check_url(spec.url):
        errors["url"] = problem
    for i, code in enumerate(spec.expected_status):
        ok = (isinstance(code, int) and 100 <= code <= 599) or (
            isinstance(code, str) and len(code) == 3 and code[0] in "12345" and code[1:] == "xx"
        )
        if not ok:
            errors[f"expected_status[{i}]"] = "must be a status code (100-599) or a class like '2xx'"
    if not spec.method.isalpha() or not spec.method.isascii() or len(spec.method) > 16:
        errors["method"] = "must be an HTTP method"
    errors.update(_check_headers(spec.headers))
    if spec.body is not None and len(spec.body.encode()) > MAX_BODY:
        errors["body"] = f"must be at most {MAX_BODY} bytes"
    if spec.bearer_token is not None and (len(spec.bearer_token) > MAX_SECRET or _control(spec.bearer_token)):
        errors["bearer_token"] = (
            f"must be at most {MAX_SECRET} characters, without CR, LF, NUL or control characters"
        )
    auth = spec.basic_auth or ()
    if auth and (":" in auth[0] or any(len(p) > MAX_SECRET or _control(p) for p in auth)):
        errors["basic_auth"] = (
            f"user and password must be at most {MAX_SECRET} characters, without control characters"
            " (and no colon in the user)"
        )
    for name in ("secret_headers", "secret_params"):
        names: list[str] = getattr(spec, name)
        if len(names) > MAX_LIST or any(len(n) > MAX_HEADER_NAME or _control(n) for n in names):
            errors[name] = f"must name at most {MAX_LIST} names of at most {MAX_HEADER_NAME} characters"
    for name in ("expected_status", "json_assertions"):
        if len(getattr(spec, name)) > MAX_LIST:
            errors[name] = f"must have at most {MAX_LIST} items"
    return errors


MAX_FLOW_STEPS = 20
MAX_VARIABLES = 50
_VAR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _check_flow_url(url: str) -> str | None:
    """A step's URL may start with a variable (`{{base}}/login`); otherwise it is checked
    as an http monitor's URL."""
    if url.startswith("{{"):
        if len(url) > MAX_URL or _control(url):
            return f"must be at most {MAX_URL} characters, without control characters"
        return None
    return _check_url(url.replace("{{", "x").replace("}}", "x"))


def _check_step(step: wire.FlowStep) -> dict[str, object]:
    errors: dict[str, object] = {}
    if problem := _check_flow_url(step.url):
        errors["url"] = problem
    if not step.method.isalpha() or not step.method.isascii() or len(step.method) > 16:
        errors["method"] = "must be an HTTP method"
    errors.update(_check_headers(step.headers))
    if step.body is not None and len(step.body.encode()) > MAX_BODY:
        errors["body"] = f"must be at most {MAX_BODY} bytes"
    for name in ("expected_status", "json_assertions", "extract", "expected_headers"):
        if len(getattr(step, name)) > MAX_LIST:
            errors[name] = f"must have at most {MAX_LIST} items"
    patterns = [("body_regex", step.body_regex)]
    for i, item in enumerate(step.extract):
        if not _VAR_NAME.fullmatch(item.name) or item.name.startswith("secrets"):
            errors[f"extract[{i}].name"] = "must be letters, digits, - and _ (and not start with 'secrets')"
        if item.source == "regex":
            patterns.append((f"extract[{i}].path", item.path))
    for name, pattern in patterns:
        try:
            re.compile(pattern or "")
        except re.error as exc:
            errors[name] = f"is not a valid regular expression: {exc}"
    return errors


def _check_api_flow(spec: wire.ApiFlowSpec) -> dict[str, object]:
    errors: dict[str, object] = {}
    if not 1 <= len(spec.steps) <= MAX_FLOW_STEPS:
        errors["steps"] = f"must have 1 to {MAX_FLOW_STEPS} steps"
    named = [(f"steps[{i}]", s) for i, s in enumerate(spec.steps)]
    named += [
        (n, s) for n, s in (("teardown", spec.teardown), ("diagnostic", spec.diagnostic)) if s is not None
    ]
    for prefix, step in named:
        errors.update({f"{prefix}.{k}": v for k, v in _check_step(step).items()})
    for name in ("variables", "secrets"):
        values: dict[str, str] = getattr(spec, name)
        if len(values) > MAX_VARIABLES or any(len(v) > MAX_SECRET or _control(v) for v in values.values()):
            errors[name] = (
                f"must have at most {MAX_VARIABLES} entries of at most {MAX_SECRET} characters,"
                " without control characters"
            )
    return errors


def _check_redis(spec: wire.RedisSpec) -> dict[str, object]:
    errors: dict[str, object] = {}
    try:
        wire.parse_redis_command(spec.command)
    except ValueError as exc:
        errors["command"] = str(exc)
    if not 0 <= spec.db <= 1000:
        errors["db"] = "must be between 0 and 1000"
    return errors


MAX_BROWSER_STEPS = 50
# What each browser action needs.
_BROWSER_NEEDS = {
    "goto": ("url",),
    "click": ("selector",),
    "fill": ("selector", "value"),
    "wait_for_selector": ("selector",),
    "wait_for_text": ("value",),
    "assert_text": ("value",),
    "assert_no_console_errors": (),
}


def _check_browser(spec: wire.BrowserSpec) -> dict[str, object]:
    errors: dict[str, object] = {}
    if not 1 <= len(spec.steps) <= MAX_BROWSER_STEPS:
        errors["steps"] = f"must have 1 to {MAX_BROWSER_STEPS} steps"
    for i, step in enumerate(spec.steps):
        for name in _BROWSER_NEEDS[step.action]:
            if not getattr(step, name):
                errors[f"steps[{i}].{name}"] = f"required by {step.action}"
        if step.url is not None and (problem := _check_url(step.url)):
            errors[f"steps[{i}].url"] = problem
        for name in ("selector", "value"):
            value = getattr(step, name)
            if value is not None and len(value) > MAX_TEXT:
                errors[f"steps[{i}].{name}"] = f"must be at most {MAX_TEXT} characters"
    if not 64 <= spec.max_memory_mb <= 4096:
        errors["max_memory_mb"] = "must be between 64 and 4096"
    if not (100 <= spec.viewport_width <= 4096 and 100 <= spec.viewport_height <= 4096):
        errors["viewport_width"] = "the viewport must be 100 to 4096 pixels each way"
    if len(spec.secrets) > MAX_VARIABLES:
        errors["secrets"] = f"must have at most {MAX_VARIABLES} entries"
    return errors


def _check_spec(kind: str, spec: msgspec.Struct) -> dict[str, object]:
    errors: dict[str, object] = {}
    if isinstance(spec, wire.HttpSpec):
        errors.update(_check_http(spec))
    if isinstance(spec, wire.ApiFlowSpec):
        errors.update(_check_api_flow(spec))
    if isinstance(spec, wire.RedisSpec):
        errors.update(_check_redis(spec))
    if isinstance(spec, wire.BrowserSpec):
        errors.update(_check_browser(spec))
    if isinstance(spec, wire.PostgresSpec | wire.MysqlSpec) and (
        len(spec.query) > MAX_TEXT or not spec.query.strip()
    ):
        errors["query"] = f"must be 1 to {MAX_TEXT} characters"
    if isinstance(spec, wire.SshSpec):
        for i, fp in enumerate(spec.host_key_fingerprints):
            if not fp.startswith("SHA256:") or len(fp) > 100:
                errors[f"host_key_fingerprints[{i}]"] = (
                    "must be a fingerprint as OpenSSH prints it: SHA256:..."
                )
    if isinstance(spec, wire.GrpcSpec) and spec.tls and not spec.verify_tls:
        errors["verify_tls"] = "grpc over TLS always verifies the certificate: give ca_pem instead"
    if isinstance(spec, wire.MqttSpec) and spec.qos not in (0, 1, 2):
        errors["qos"] = "must be 0, 1 or 2"
    if isinstance(spec, wire.WebsocketSpec):
        if problem := _check_url(spec.url, ("ws", "wss")):
            errors["url"] = problem
        errors.update(_check_headers(spec.headers))
        if len(spec.subprotocols) > MAX_LIST:
            errors["subprotocols"] = f"must have at most {MAX_LIST} items"
    for name in ("ca_pem", "expected_content", "excluded_content", "graphql_query", "send", "expect"):
        value = getattr(spec, name, None)
        if isinstance(value, str) and len(value) > MAX_TEXT:
            errors[name] = f"must be at most {MAX_TEXT} characters"
    if len(getattr(spec, "expected_values", ())) > MAX_LIST:
        errors["expected_values"] = f"must have at most {MAX_LIST} items"
    port = getattr(spec, "port", None)
    if port is not None and not 1 <= port <= 65535:
        errors["port"] = "must be between 1 and 65535"
    host = getattr(spec, "host", None)
    if host is not None and not host.strip():
        errors["host"] = "must not be empty"
    elif host is not None and (len(host) > 253 or _control(host) or any(c in host for c in " /?#@")):
        errors["host"] = (
            "must be a host name or address (no scheme, path or spaces) of at most 253 characters"
        )
    if not errors and len(msgspec.msgpack.encode(spec)) > MAX_SPEC_BYTES:
        errors["spec"] = f"the check's settings must encode to at most {MAX_SPEC_BYTES // 1024} KiB"
    return errors


def parse(data: object, regions: list[str]) -> MonitorConfig:
    """Validate a flat monitor object; raise ValidationError with field paths."""
    if not isinstance(data, dict):
        raise ValidationError({"body": "must be a JSON object"})
    data = normalize(data)
    common_part = {k: v for k, v in data.items() if k in COMMON_FIELDS}
    spec_part = {k: v for k, v in data.items() if k not in COMMON_FIELDS}
    try:
        common = msgspec.convert(common_part, MonitorCommon)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None
    kind = common.type
    errors: dict[str, object] = {}
    if kind in UNSUPPORTED_TYPES:
        raise ValidationError({"type": UNSUPPORTED_TYPES[kind]})
    if kind not in KINDS:
        raise ValidationError({"type": f"unknown type; use one of {', '.join(KINDS)}"})
    spec: msgspec.Struct | None = None
    if kind == "heartbeat":
        # Imported here: controller.heartbeats imports incidents, which imports this module.
        fallback = common.check_interval if "check_interval" in common_part else None
        spec, problems = heartbeat.parse_spec(spec_part, fallback_interval=fallback)
        errors.update(problems)
    else:
        spec_type = SPEC_TYPES[kind]
        renames = SPEC_API_NAMES.get(kind, {})
        api_to_wire = {api: wire_name for wire_name, api in renames.items()}
        spec_part = {api_to_wire.get(k, k): v for k, v in spec_part.items() if k not in renames}
        unknown = set(spec_part) - set(spec_type.__struct_fields__)
        errors.update({k: "unknown field" for k in sorted(unknown)})
        if not errors:
            try:
                spec = msgspec.convert(spec_part, spec_type)
            except msgspec.ValidationError as e:
                err = from_msgspec(e)
                err.details = {renames.get(k, k): v for k, v in err.details.items()}
                raise err from None
            errors.update({renames.get(k, k): v for k, v in _check_spec(kind, spec).items()})
    default_locations = [] if kind == "heartbeat" else list(regions)
    locations = common.locations if common.locations is not None else default_locations
    if not locations and kind != "heartbeat":
        errors["locations"] = "must name at least one region"
    for i, loc in enumerate(locations):
        if loc not in regions:
            errors[f"locations[{i}]"] = f"unknown region {loc!r}; known: {', '.join(regions)}"
    if len(set(locations)) != len(locations):
        errors["locations"] = "must not repeat a region"
    if common.consensus not in MODES:
        errors["consensus"] = f"must be one of {', '.join(MODES)}"
    elif common.consensus == "quorum" and common.quorum is None:
        errors["quorum"] = "required when consensus is 'quorum'"
    elif common.quorum is not None and common.quorum > len(locations):
        errors["quorum"] = "must not exceed the number of locations"
    if errors:
        raise ValidationError(errors)
    interval_s = common.check_interval
    if kind == "heartbeat" and getattr(spec, "run_interval", None):
        interval_s = spec.run_interval  # type: ignore[union-attr]  # one value, two names
    return MonitorConfig(
        name=common.name,
        kind=kind,
        spec=spec,  # type: ignore[arg-type]
        interval_s=interval_s,
        timeout_s=common.timeout,
        locations=locations,
        consensus=common.consensus,
        quorum=common.quorum,
        retry_count=common.retry_count,
        recovery_count=common.recovery_count,
        enabled=common.is_enabled,
        tags=common.tags,
        parent_id=common.parent_id,
        incident_on_degraded=common.incident_on_degraded,
        notifications=common.notifications,
        project=common.project,
        escalation_policy=common.escalation_policy,
    )


def config_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The flat, editable shape of a stored monitor (inverse of `parse`)."""
    out: dict[str, Any] = {
        "name": row["name"],
        "type": row["kind"],
        "timeout": row["timeout_s"],
        "check_interval": row["interval_s"],
        "locations": list(row["locations"]),
        "consensus": row["consensus"],
        "quorum": row["quorum"],
        "retry_count": row["retry_count"],
        "recovery_count": row["recovery_count"],
        "is_enabled": row["enabled"],
        "tags": list(row["tags"]),
        "parent_id": row.get("parent_id"),
        "incident_on_degraded": row.get("incident_on_degraded", False),
        "notifications": list(row.get("notifications") or []),
        "project": row.get("project"),
        "escalation_policy": row.get("escalation_policy_id"),
    }
    # The stored spec is the to_builtins form of a validated spec (spec_json), defaults
    # left out: read its fields straight from it, no convert/to_builtins round trip (this
    # runs for every monitor of every list page).
    stored = row["spec"]
    cls = _spec_type(row["kind"])
    if cls is not None and stored is not None:
        for name, key, d, mutable in _spec_layout(cls, row["kind"]):
            out[name] = stored[key] if key in stored else (d.copy() if mutable else d)
    if row["kind"] == "heartbeat" and out.get("run_interval"):
        out["check_interval"] = out["run_interval"]
    return out


def _spec_type(kind: str) -> type[msgspec.Struct] | None:
    if kind == "heartbeat":
        return heartbeat.HeartbeatSpec
    return SPEC_TYPES.get(kind)


@functools.cache
def _spec_layout(cls: type[msgspec.Struct], kind: str) -> tuple[tuple[str, str, Any, bool], ...]:
    """(API name, field, default in builtins form, is the default mutable) of a spec type,
    in field order; a required field's default is None (to_builtins always has it)."""
    renames = SPEC_API_NAMES.get(kind, {})
    out = []
    for f in msgspec.structs.fields(cls):
        default = f.default if f.default is not msgspec.NODEFAULT else None
        if f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        d = msgspec.to_builtins(default)
        out.append((renames.get(f.name, f.name), f.encode_name, d, isinstance(d, list | dict)))
    return tuple(out)


def redact(out: dict[str, Any]) -> dict[str, Any]:
    """The config as the API shows it: credentials replaced by "<redacted>", in place
    (pass a copy to keep the original; config_fields() returns a fresh dict). Which header
    and query parameter names are secret is shared/redact.py's rule plus the monitor's own
    `secret_headers` and `secret_params`.

    Probes need the secrets, so they are stored; API responses never carry them."""
    if out.get("bearer_token"):
        out["bearer_token"] = REDACTED
    if out.get("basic_auth"):
        out["basic_auth"] = [out["basic_auth"][0], REDACTED]
    if isinstance(out.get("headers"), dict):
        out["headers"] = redact_headers(out["headers"], out.get("secret_headers") or ())
    if isinstance(out.get("url"), str):
        out["url"] = redact_url(out["url"], out.get("secret_params") or ())
    if isinstance(out.get("secrets"), dict):
        out["secrets"] = dict.fromkeys(out["secrets"], REDACTED)
    marked = out.get("secret_headers") or ()
    params = out.get("secret_params") or ()
    for path, step in _flow_steps(out):
        shown = dict(step)
        if isinstance(shown.get("headers"), dict):
            shown["headers"] = redact_headers(shown["headers"], marked)
        if isinstance(shown.get("url"), str):
            shown["url"] = redact_url(shown["url"], params)
        _put_step(out, path, shown)
    if out.get("password"):
        out["password"] = REDACTED
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = redact_headers(out["metadata"])
    return out


def _flow_steps(out: dict[str, Any]) -> list[tuple[tuple[str, int | None], dict[str, Any]]]:
    """An api_flow's steps, teardown and diagnostic, each with where it sits."""
    found: list[tuple[tuple[str, int | None], dict[str, Any]]] = []
    if isinstance(out.get("steps"), list):
        found += [(("steps", i), s) for i, s in enumerate(out["steps"]) if isinstance(s, dict)]
    for name in ("teardown", "diagnostic"):
        if isinstance(out.get(name), dict):
            found.append(((name, None), out[name]))
    return found


def _put_step(out: dict[str, Any], path: tuple[str, int | None], step: dict[str, Any]) -> None:
    name, index = path
    if index is None:
        out[name] = step
    else:
        out[name] = [*out[name][:index], step, *out[name][index + 1 :]]


def _restore_step(step: dict[str, Any], stored: object) -> dict[str, Any]:
    if not isinstance(stored, dict):
        return step
    out = dict(step)
    if isinstance(out.get("headers"), dict):
        kept = {k.lower(): v for k, v in (stored.get("headers") or {}).items()}
        out["headers"] = {
            k: kept.get(k.lower(), v) if v == REDACTED else v for k, v in out["headers"].items()
        }
    if isinstance(out.get("url"), str) and isinstance(stored.get("url"), str):
        out["url"] = restore_url(out["url"], stored["url"])
    return out


def restore_secrets(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Where a client sends back a "<redacted>" value it was shown, keep the stored secret."""
    out = dict(body)
    # An api_flow's steps: by position (steps) or name (teardown, diagnostic).
    for (name, index), step in _flow_steps(out):
        stored = current.get(name)
        if index is not None:
            stored = stored[index] if isinstance(stored, list) and index < len(stored) else None
        _put_step(out, (name, index), _restore_step(step, stored))
    if out.get("bearer_token") == REDACTED:
        out["bearer_token"] = current.get("bearer_token")
    auth = out.get("basic_auth")
    if (
        isinstance(auth, list | tuple)
        and len(auth) == 2
        and auth[1] == REDACTED
        and current.get("basic_auth")
    ):
        out["basic_auth"] = [auth[0], current["basic_auth"][1]]
    if isinstance(out.get("headers"), dict):
        stored = {k.lower(): v for k, v in (current.get("headers") or {}).items()}
        out["headers"] = {
            k: stored.get(k.lower(), v) if v == REDACTED else v for k, v in out["headers"].items()
        }
    if isinstance(out.get("url"), str) and isinstance(current.get("url"), str):
        out["url"] = restore_url(out["url"], current["url"])
    if out.get("password") == REDACTED:
        out["password"] = current.get("password")
    if isinstance(out.get("metadata"), dict):
        stored_meta = current.get("metadata") or {}
        out["metadata"] = {
            k: stored_meta.get(k, v) if v == REDACTED else v for k, v in out["metadata"].items()
        }
    if isinstance(out.get("secrets"), dict):
        stored_secrets = current.get("secrets") or {}
        out["secrets"] = {
            k: stored_secrets.get(k, v) if v == REDACTED else v for k, v in out["secrets"].items()
        }
    return out


def decode_spec(kind: str, stored: dict[str, Any] | None) -> wire.CheckSpec | None:
    if kind not in SPEC_TYPES or stored is None:
        return None
    data = {k: v for k, v in stored.items() if k != "type"}
    spec: wire.CheckSpec = msgspec.convert(data, SPEC_TYPES[kind])  # type: ignore[assignment]
    return spec


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
