"""Monitor input from the field lists, schemas and configuration blocks of the reference
services (tests/testdata has their request examples; these are the fields their documents
list): each is accepted and mapped onto our fields, or refused with a 422 naming the field
and why. Pure: config.parse, no server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from probefleet.controller.monitors import config, heartbeat
from probefleet.controller.validation import ValidationError
from probefleet.shared import wire

REGIONS = ["us-east", "eu-west", "us-east-1", "eu-west-1"]


def spec(body: dict[str, Any]) -> tuple[str, Any]:
    cfg = config.parse(body, REGIONS)
    return cfg.kind, cfg.spec


# The HTTP monitor configuration block of reference 001, field by field.
HTTP_BLOCK: list[tuple[str, Any, str, Any]] = [
    ("method", "POST", "method", "POST"),
    ("expected_status", [200, 201, 204], "expected_status", [200, 201, 204]),
    ("follow_redirects", False, "follow_redirects", False),
    ("verify_ssl", False, "verify_tls", False),
    ("headers", {"User-Agent": "m/1.0"}, "headers", {"User-Agent": "m/1.0"}),
    ("body", '{"health": "check"}', "body", '{"health": "check"}'),
    ("expected_content", "status: ok", "expected_content", "status: ok"),
    ("excluded_content", "error", "excluded_content", "error"),
    ("json_path", "$.status", "json_assertions", [wire.Assertion(path="$.status", op="exists")]),
]


@pytest.mark.parametrize(("field", "value", "ours", "want"), HTTP_BLOCK, ids=[r[0] for r in HTTP_BLOCK])
def test_every_field_of_the_http_configuration_block(field: str, value: Any, ours: str, want: Any) -> None:
    kind, s = spec({"name": "w", "type": "http", "url": "https://example.com", "timeout": 30, field: value})
    assert kind == "http" and getattr(s, ours) == want


def test_json_path_with_expected_json_value_is_one_assertion() -> None:
    _, s = spec(
        {"name": "w", "url": "https://example.com", "json_path": "$.status", "expected_json_value": "healthy"}
    )
    assert s.json_assertions == [wire.Assertion(path="$.status", op="equals", value="healthy")]
    with pytest.raises(ValidationError) as e:
        spec({"name": "w", "url": "https://example.com", "expected_json_value": "healthy"})
    assert "json_path" in e.value.details


# Reference 002's MonitorCreate requires name, type and target for every type.
MONITOR_CREATE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("HTTP", "https://example.com/health", "http", {"url": "https://example.com/health"}),
    ("PING", "example.com", "icmp", {"host": "example.com"}),
    ("SSL", "example.com", "tls", {"host": "example.com", "port": 443}),
    ("DNS", "example.com", "dns", {"name": "example.com"}),
    ("PORT", "db.example.com:5432", "tcp", {"host": "db.example.com", "port": 5432}),
    ("HEARTBEAT", "nightly-backup", "heartbeat", {"run_interval": 3600}),
]


@pytest.mark.parametrize(
    ("kind", "target", "ours", "want"), MONITOR_CREATE, ids=[r[0] for r in MONITOR_CREATE]
)
def test_monitor_create_with_a_target_for_every_type(
    kind: str, target: str, ours: str, want: dict[str, Any]
) -> None:
    body = {
        "name": "m",
        "type": kind,
        "target": target,
        "checkInterval": 3600,
        "isActive": True,
        "config": {},
    }
    got, s = spec(body)
    assert got == ours
    assert {k: getattr(s, k) for k in want} == want


def test_a_heartbeat_with_only_name_type_and_target_gets_the_default_interval() -> None:
    # MonitorCreate's checkInterval is optional while every Monitor has one: the server's
    # default, the same for a heartbeat as for any other kind.
    kind, s = spec({"name": "m", "type": "HEARTBEAT", "target": "nightly-backup"})
    default = next(
        f.default for f in msgspec.structs.fields(config.MonitorCommon) if f.name == "check_interval"
    )
    assert kind == "heartbeat" and s.run_interval == heartbeat.DEFAULT_RUN_INTERVAL == default
    assert s.cron is None
    _, s = spec({"name": "m", "type": "HEARTBEAT", "target": "x", "cron": "0 3 * * *"})
    assert s.run_interval is None and s.cron == "0 3 * * *"
    with pytest.raises(ValidationError) as e:
        spec({"name": "m", "type": "HEARTBEAT", "run_interval": 60, "cron": "0 3 * * *"})
    assert "not both" in e.value.details["run_interval"]


@pytest.mark.parametrize("kind", ["WHOIS", "BLACKLIST"])
def test_types_probefleet_does_not_run_are_refused_with_the_reason(kind: str) -> None:
    with pytest.raises(ValidationError) as e:
        spec({"name": "m", "type": kind, "target": "example.com"})
    assert e.value.details["type"].startswith(f"{kind} monitors are not supported: ")


# Reference 003's optional fields.
OPTIONAL: list[tuple[dict[str, Any], str, str, Any]] = [
    (
        {"type": "API", "url": "https://a.example.com", "requestHeaders": '{"X-A": "1"}'},
        "http",
        "headers",
        {"X-A": "1"},
    ),
    (
        {"type": "API", "url": "https://a.example.com", "requestHeaders": {"X-A": "1"}},
        "http",
        "headers",
        {"X-A": "1"},
    ),
    (
        {"type": "API", "url": "https://a.example.com", "requestBody": "{}", "httpMethod": "POST"},
        "http",
        "body",
        "{}",
    ),
    ({"type": "PORT", "url": "db.example.com", "port": 22, "protocol": "TCP"}, "tcp", "port", 22),
    ({"type": "PORT", "url": "ns.example.com", "port": 53, "protocol": "UDP"}, "udp", "port", 53),
    ({"type": "DNS", "url": "example.com", "dnsRecord": "MX"}, "dns", "record_type", "MX"),
    ({"type": "DNS", "url": "example.com", "dnsRecord": "aaaa"}, "dns", "record_type", "AAAA"),
    ({"type": "SSL_CERT", "url": "example.com", "sslCertExpiryDays": 30}, "tls", "warn_days", 30),
    ({"type": "CRON", "interval": 3600, "gracePeriod": 300}, "heartbeat", "grace_period", 300),
]


@pytest.mark.parametrize(
    ("body", "ours", "field", "want"),
    OPTIONAL,
    ids=[next(iter(r[0].keys() - {"type", "url"})) + "-" + r[1] for r in OPTIONAL],
)
def test_every_optional_field(body: dict[str, Any], ours: str, field: str, want: Any) -> None:
    kind, s = spec({"name": "m", **body})
    assert kind == ours and getattr(s, field) == want


def test_headers_as_a_json_string_must_hold_an_object() -> None:
    with pytest.raises(ValidationError) as e:
        spec({"name": "m", "url": "https://a.example.com", "requestHeaders": "[1, 2]"})
    assert e.value.details == {"headers": "must be an object, or a JSON string of one"}


def test_a_port_in_the_target_and_a_port_field_agree_or_the_field_wins() -> None:
    assert spec({"name": "m", "type": "tcp", "url": "tcp://db.example.com:5432"})[1].port == 5432
    assert spec({"name": "m", "type": "tcp", "url": "db.example.com:5432", "port": 6432})[1].port == 6432
    assert spec({"name": "m", "type": "udp", "url": "[2001:db8::1]:53"})[1].host == "2001:db8::1"
    with pytest.raises(ValidationError) as e:
        spec({"name": "m", "type": "tcp", "url": "db.example.com"})
    assert e.value.details == {"port": "required field"}
