"""Destinations users choose (channel URLs, webhook subscribers): only public unicast
addresses are destinations unless a setting allows private ones."""

from __future__ import annotations

import pytest

from probefleet.controller.notifications import destinations


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("::ffff:127.0.0.1", True),
        ("ff02::1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
    ids=lambda v: str(v),
)
def test_only_public_unicast_addresses_are_destinations(address: str, refused: bool) -> None:
    assert destinations.forbidden(address) is refused
