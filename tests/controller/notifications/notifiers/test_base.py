from __future__ import annotations

import msgspec
import pytest

from probefleet.controller.notifications.notifiers.base import error_for_status, mask_url, retry_after
from probefleet.controller.notifications.notifiers.render import duration, render
from tests.controller.notifications.notifiers.receivers import sample


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        *[(s, True) for s in (301, 400, 401, 403, 404, 410, 422)],
        *[(s, False) for s in (408, 429, 500, 502, 503)],
    ],
    ids=lambda v: str(v),
)
def test_it_classifies_status_codes(status: int, permanent: bool) -> None:
    error = error_for_status("svc", status, "body")
    assert error is not None
    assert error.permanent is permanent


def test_it_accepts_every_2xx() -> None:
    assert all(error_for_status("svc", s, "") is None for s in (200, 201, 202, 204))


def test_it_reads_retry_after_as_seconds_or_a_date() -> None:
    assert retry_after("12") == 12
    assert retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500) == 10
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500) == 0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_it_masks_urls_down_to_host_and_last_characters() -> None:
    assert mask_url("https://hooks.slack.com/services/T/B/abcdefghijklmnop") == (
        "https://hooks.slack.com/…/****mnop"
    )
    assert mask_url("https://user:pw@host.test/x") == "https://host.test/…/****"


def test_it_renders_one_wording_for_every_channel() -> None:
    msg = render(sample("monitor.down", reminder=True, escalation_level=2))
    assert msg.title == "[DOWN] Main Website (reminder)"
    assert msg.summary == "Main Website is down. Failing from us-east, eu-west: Connection timeout."
    facts = dict(msg.facts)
    assert facts["Reason"] == "timeout - Connection timeout"
    assert facts["Failed checks"] == "3/3"
    assert facts["Escalation level"] == "2"
    assert "Details" not in facts  # no link without the controller's public address
    assert msg.timestamp == "2024-01-15T10:30:00Z"
    linked = render(sample("incident.resolved", link="https://status.example/console/incidents/456"))
    assert dict(linked.facts)["Details"] == "https://status.example/console/incidents/456"
    assert linked.summary == "Incident for Main Website resolved after 15s."  # no "failing from" once over


@pytest.mark.parametrize(
    "event",
    [
        "monitor.down",
        "monitor.up",
        "monitor.degraded",
        "incident.opened",
        "incident.acknowledged",
        "incident.resolved",
        "ssl.expiring",
        "region.unavailable",
        "test",
    ],
)
def test_it_renders_every_event(event: str) -> None:
    msg = render(sample(event))
    assert "Main Website" in msg.title
    assert msg.summary.endswith(".")


def test_it_keeps_names_on_one_line() -> None:
    monitor = msgspec.structs.replace(sample().monitor, name="evil\r\nBcc: x@y")
    msg = render(sample(monitor=monitor))
    assert "\n" not in msg.title and "\r" not in msg.title


def test_it_formats_durations_without_leading_zero_units() -> None:
    assert [duration(s) for s in (15, 250, 7205)] == ["15s", "4m 10s", "2h 0m 5s"]
