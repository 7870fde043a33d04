"""Every Reason is produced by at least one probe test (a new member needs a test)."""

from __future__ import annotations

from pathlib import Path

from probefleet.shared.wire import Reason


def test_it_has_a_test_producing_every_reason() -> None:
    sources = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    sources = sources.replace(Path(__file__).read_text(), "")
    missing = [r.name for r in Reason if f"Reason.{r.name}" not in sources and f'"{r.value}"' not in sources]
    assert missing == []


def test_the_reasons_are_a_closed_set_that_only_grows() -> None:
    """Results are stored and sent to notification channels by value: a reason renamed or
    removed breaks them. New members are added to this list."""
    assert {r.value for r in Reason} >= {
        "timeout", "dns_error", "connection_refused", "connection_reset", "network_unreachable",
        "tls_error", "cert_expired", "cert_expiring", "cert_invalid", "hostname_mismatch",
        "issuer_mismatch", "protocol_mismatch", "status_mismatch", "too_many_redirects",
        "keyword_missing", "keyword_present", "json_mismatch", "graphql_error", "slow_response",
        "response_mismatch", "no_response", "packet_loss", "permission_denied", "rcode_mismatch",
        "answer_mismatch", "deadline_passed", "invalid_target", "protocol_error",
        "header_mismatch", "latency_exceeded", "extraction_failed", "variable_missing",
        "auth_failed", "host_key_changed", "query_failed", "value_mismatch", "not_serving",
        "starttls_unavailable", "cert_revoked", "element_missing", "console_errors",
        "resource_limit", "browser_unavailable", "internal_error", "probe_stopped", "no_capable_probe",
    }  # fmt: skip
