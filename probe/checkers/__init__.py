"""The one registry of check kinds: kind string = module name = msgspec tag."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from probefleet.probe.checkers import (
    api_flow,
    browser,
    dns,
    grpc,
    http,
    icmp,
    imap,
    mqtt,
    mysql,
    pop3,
    postgres,
    redis,
    smtp,
    ssh,
    tcp,
    tls,
    udp,
    websocket,
)
from probefleet.probe.checkers.base import Checker, Outcome

CHECKERS: dict[str, Checker] = {
    "http": http.check,
    "tcp": tcp.check,
    "udp": udp.check,
    "icmp": icmp.check,
    "dns": dns.check,
    "tls": tls.check,
    "api_flow": api_flow.check,
    "websocket": websocket.check,
    "grpc": grpc.check,
    "ssh": ssh.check,
    "postgres": postgres.check,
    "mysql": mysql.check,
    "redis": redis.check,
    "smtp": smtp.check,
    "imap": imap.check,
    "pop3": pop3.check,
    "mqtt": mqtt.check,
    "browser": browser.check,
}

# The libraries a kind needs beyond the probe's own dependencies (the `checks` and
# `browser` extras); each checker imports its library when it runs, so a probe without
# the extra starts and leaves the kind out of its capabilities.
REQUIRES: dict[str, tuple[str, ...]] = {
    "grpc": grpc.REQUIRES,
    "ssh": ssh.REQUIRES,
    "postgres": postgres.REQUIRES,
    "mysql": mysql.REQUIRES,
    "redis": redis.REQUIRES,
    "mqtt": mqtt.REQUIRES,
    "browser": browser.REQUIRES,
}


def importable(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def capabilities(checkers: Mapping[str, Checker] = CHECKERS) -> list[str]:
    """The kinds of `checkers` this process can run here, announced in every heartbeat:
    all of them but ICMP when the host allows neither raw nor unprivileged ICMP sockets,
    browser when no Chromium is installed, and those whose library (REQUIRES) is not."""
    host_checks = {"icmp": icmp.available, "browser": browser.available}
    return sorted(
        kind
        for kind in checkers
        if host_checks.get(kind, lambda: True)() and importable(*REQUIRES.get(kind, ()))
    )


__all__ = ["CHECKERS", "REQUIRES", "Checker", "Outcome", "capabilities"]
