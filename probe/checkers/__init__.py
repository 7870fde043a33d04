"""The one registry of check kinds: kind string = module name = msgspec tag."""

from __future__ import annotations

from collections.abc import Mapping

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


def capabilities(checkers: Mapping[str, Checker] = CHECKERS) -> list[str]:
    """The kinds of `checkers` this process can run here, announced in every heartbeat:
    all of them but ICMP when the host allows neither raw nor unprivileged ICMP sockets."""
    return sorted(kind for kind in checkers if kind != "icmp" or icmp.available())


__all__ = ["CHECKERS", "Checker", "Outcome", "capabilities"]
