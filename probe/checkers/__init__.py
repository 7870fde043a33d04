"""The one registry of check kinds: kind string = module name = msgspec tag."""

from __future__ import annotations

from probefleet.probe.checkers import dns, http, icmp, tcp, tls, udp
from probefleet.probe.checkers.base import Checker, Outcome

CHECKERS: dict[str, Checker] = {
    "http": http.check,
    "tcp": tcp.check,
    "udp": udp.check,
    "icmp": icmp.check,
    "dns": dns.check,
    "tls": tls.check,
}

__all__ = ["CHECKERS", "Checker", "Outcome"]
