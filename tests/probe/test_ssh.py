"""ssh against a real asyncssh server on loopback: banner, fingerprint pinning, a changed key."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from probefleet.probe.checkers import CHECKERS
from probefleet.probe.checkers.ssh import _asyncssh
from probefleet.shared.wire import Reason, SshSpec, Status

from .by_hand import probe_check
from .conftest import RecordPeers

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    asyncssh = _asyncssh()


async def _serve(key: Any) -> Any:
    return await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_version="ProbefleetTest_1.0", reuse_address=True
    )


@pytest.fixture(scope="module")
async def ssh_server() -> AsyncIterator[tuple[int, str, Any]]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await _serve(key)
    port = server.sockets[0].getsockname()[1]
    yield port, key.get_fingerprint("sha256"), key
    server.close()
    await server.wait_closed()


async def run(spec: SshSpec, budget: float = 3.0):  # type: ignore[no-untyped-def]
    return await CHECKERS["ssh"](spec, timeout=budget, source_address=None)


async def test_the_banner_and_a_pinned_key_pass(ssh_server: tuple[int, str, Any]) -> None:
    port, fingerprint, _ = ssh_server
    out = await run(
        SshSpec(
            host="127.0.0.1", port=port, host_key_fingerprints=[fingerprint], expected_banner="Probefleet"
        )
    )
    assert out.status == Status.OK, out
    assert out.details["banner"] == "SSH-2.0-ProbefleetTest_1.0"
    assert out.details["host_key_fingerprint"] == fingerprint
    assert out.details["host_key_type"] == "ssh-ed25519"
    assert {"banner", "key_exchange", "total"} <= out.timings.keys()


async def test_a_changed_host_key_fails_with_its_own_reason(ssh_server: tuple[int, str, Any]) -> None:
    port, fingerprint, _ = ssh_server
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    out = await run(SshSpec(host="127.0.0.1", port=port, host_key_fingerprints=[other]))
    assert out.reason == Reason.HOST_KEY_CHANGED
    assert fingerprint in out.message


async def test_a_banner_without_the_expected_text_is_a_response_mismatch(
    ssh_server: tuple[int, str, Any],
) -> None:
    port, _, _ = ssh_server
    out = await run(SshSpec(host="127.0.0.1", port=port, expected_banner="OpenSSH"))
    assert out.reason == Reason.RESPONSE_MISMATCH


async def test_nothing_listening_is_connection_refused() -> None:
    out = await run(SshSpec(host="127.0.0.1", port=9))
    assert out.reason == Reason.CONNECTION_REFUSED


def test_a_kind_whose_library_is_missing_is_not_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    from probefleet.probe import checkers

    assert "ssh" in checkers.capabilities()
    monkeypatch.setitem(checkers.REQUIRES, "ssh", ("probefleet_no_such_library",))
    assert "ssh" not in checkers.capabilities() and "http" in checkers.capabilities()


async def test_it_connects_from_the_probe_source_address(
    ssh_server: tuple[int, str, Any], record_peers: RecordPeers
) -> None:
    """Both connections (the banner, then the key exchange) leave from the address."""
    port, peers = await record_peers(ssh_server[0])
    out = await CHECKERS["ssh"](
        SshSpec(host="127.0.0.1", port=port), timeout=3.0, source_address="127.0.0.12"
    )
    assert out.status == Status.OK, out
    assert len(peers) == 2 and set(peers) == {"127.0.0.12"}


async def test_probefleet_probe_check_runs_it_from_a_spec_file(
    ssh_server: tuple[int, str, Any], tmp_path: Path
) -> None:
    port, fingerprint, _ = ssh_server
    fields = {"host": "127.0.0.1", "port": port, "host_key_fingerprints": [fingerprint]}
    code, result = await probe_check("ssh", fields, tmp_path)
    assert code == 0 and result["details"]["host_key_fingerprint"] == fingerprint, result
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    code, result = await probe_check("ssh", fields | {"host_key_fingerprints": [other]}, tmp_path)
    assert code == 1 and result["reason"] == "host_key_changed", result
