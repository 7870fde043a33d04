from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from probefleet.probe.checkers import icmp
from probefleet.shared.wire import IcmpSpec, Reason, Status

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")


@needs_root
async def test_it_pings_loopback_and_reports_rtt_and_jitter() -> None:
    spec = IcmpSpec(host="127.0.0.1", count=3, interval=0.01)
    out = await icmp.check(spec, timeout=1.0, source_address="127.0.0.12")
    assert out.status == Status.OK, out.message
    assert out.details["received"] == 3
    assert out.timings["rtt_min"] <= out.timings["rtt_avg"] <= out.timings["rtt_max"]
    assert out.timings["jitter"] >= 0


@needs_root
async def test_a_source_address_the_host_does_not_have_is_network_unreachable() -> None:
    out = await icmp.check(IcmpSpec(host="127.0.0.1", count=1), timeout=1.0, source_address="192.0.2.1")
    assert out.reason == Reason.NETWORK_UNREACHABLE, out


@needs_root
async def test_it_reports_degraded_over_the_threshold() -> None:
    spec = IcmpSpec(host="127.0.0.1", count=1, degraded_ms=0.0)
    out = await icmp.check(spec, timeout=1.0, source_address=None)
    assert (out.status, out.reason) == (Status.DEGRADED, Reason.SLOW_RESPONSE)


def _unprivileged_ping_allowed() -> bool:
    low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    return low <= os.getegid() <= high


@pytest.mark.skipif(_unprivileged_ping_allowed(), reason="unprivileged ICMP is allowed here")
async def test_it_names_the_sysctl_when_sockets_are_not_allowed() -> None:
    spec = IcmpSpec(host="127.0.0.1", count=1)
    out = await icmp.check(spec, timeout=1.0, source_address=None, privileged=False)
    assert out.reason == Reason.PERMISSION_DENIED
    assert "net.ipv4.ping_group_range" in out.message


_LOSSY = """
import asyncio, json, subprocess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/icmp_echo_ignore_all", "w") as f:
    f.write("1")
from probe.checkers import icmp
from shared.wire import IcmpSpec
spec = IcmpSpec(host="127.0.0.1", count=2, interval=0.01, max_packet_loss=0.5)
out = asyncio.run(icmp.check(spec, timeout=0.3, source_address=None))
print(json.dumps({"reason": out.reason, "loss": out.details["packet_loss"]}))
"""


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_it_fails_on_packet_loss() -> None:
    # A private network namespace whose kernel ignores echo requests: real loss,
    # and nothing outside the test changes.
    cmd = ["unshare", "-n", sys.executable, "-c", textwrap.dedent(_LOSSY)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True)
    assert json.loads(done.stdout) == {"reason": "packet_loss", "loss": 1.0}
