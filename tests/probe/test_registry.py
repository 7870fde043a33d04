"""The checker registry: kinds load their modules (and libraries) when first run, so a
started probe holds none of the optional libraries, yet announces every kind it can run."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest

from probefleet.probe import checkers
from probefleet.probe.checkers import CHECKERS, KINDS, REQUIRES, capabilities
from probefleet.shared import subjects, wire
from probefleet.shared.streams import ensure_streams
from probefleet.shared.wire import CheckJob, HttpSpec, Status

REGION = "eu-west"

# What a probe that has only run HTTP checks must not hold: the libraries of other kinds,
# nkeys (no credential here) and aiohttp's server (no metrics listener).
HEAVY = (
    "cryptography",
    "grpc",
    "grpc_health",
    "asyncssh",
    "asyncpg",
    "pymysql",
    "redis",
    "aiomqtt",
    "aiosmtplib",
    "aioimaplib",
    "playwright",
    "opentelemetry",
    "nkeys",
    "nacl",
    "aiohttp.web",
    "yaml",
    "jinja2",
)

# Prints the modules the probe holds when it exits (after SIGTERM and its drain).
_WRAPPER = textwrap.dedent(
    """
    import atexit, runpy, sys
    out = sys.argv[1]
    atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
    sys.argv = ["probefleet", *sys.argv[2:]]
    runpy.run_module("probefleet.shared.cli", run_name="__main__")
    """
)


async def test_a_started_probe_that_ran_http_checks_has_not_imported_the_optional_libraries(
    nats_url: str, http_target: str, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream(), max_bytes=64 << 20)
    beats = await nc.subscribe(subjects.heartbeat(REGION))
    results = await nc.subscribe(subjects.results(REGION))
    modules = tmp_path / "modules.txt"
    env = {
        **os.environ,
        "PROBEFLEET_NATS_URL": nats_url,
        "PROBEFLEET_PROBE_ID": "lean",
        "PROBEFLEET_NATS_INSECURE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", _WRAPPER, str(modules), "probe", "run", "--region", REGION],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        beat = wire.decode_heartbeat((await beats.next_msg(timeout=20)).data)
        now = time.time()
        job = CheckJob(
            monitor_id=1, due=now, deadline=now + 5, region=REGION, timeout=2, spec=HttpSpec(url=http_target)
        )
        await nc.publish(subjects.jobs(REGION), wire.encode(job))
        result = wire.decode_result((await results.next_msg(timeout=10)).data)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
        await nc.close()
    assert result.status == Status.OK
    # It announces the kinds whose libraries are installed without having imported them.
    assert set(beat.capabilities) == set(capabilities())
    assert {"http", "tls", "grpc", "ssh", "postgres", "mysql", "redis", "mqtt"} <= set(beat.capabilities)
    held = set(modules.read_text().split())
    assert "probefleet.probe.checkers.http" in held
    assert not {m for m in HEAVY if m in held}
    assert not {m for m in held if m.startswith(("cryptography.", "grpc.", "playwright.", "asyncssh."))}
    assert "probefleet.probe.checkers.tls" not in held


async def test_the_first_check_of_a_kind_loads_its_module() -> None:
    """The registry's entry runs the module's check once loaded (a refused TCP connection
    here), the first time and every time after."""
    for _ in range(2):
        out = await CHECKERS["tcp"](wire.TcpSpec(host="127.0.0.1", port=9), timeout=1.0, source_address=None)
        assert (out.status, out.reason) == (Status.FAIL, wire.Reason.CONNECTION_REFUSED)
    assert "probefleet.probe.checkers.tcp" in sys.modules


def test_it_has_an_entry_for_every_kind_and_every_kind_a_module() -> None:
    assert set(KINDS) == set(CHECKERS) == set(wire.PROBE_KINDS)
    for kind in KINDS:
        assert callable(importlib.import_module(checkers.module_name(kind)).check)


@pytest.mark.parametrize("kind", sorted(REQUIRES))
def test_the_registry_requires_what_the_kind_declares(kind: str) -> None:
    """A checker module that names its libraries itself names the same ones."""
    module = importlib.import_module(checkers.module_name(kind))
    assert REQUIRES[kind] == getattr(module, "REQUIRES", REQUIRES[kind])
    assert all(checkers.importable(m) for m in REQUIRES[kind])


def test_a_kind_whose_library_is_missing_is_not_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tls" in capabilities()
    monkeypatch.setitem(REQUIRES, "tls", ("probefleet_no_such_library",))
    assert "tls" not in capabilities() and "http" in capabilities()


async def test_concurrent_first_checks_of_a_kind_all_run() -> None:
    """Several checks of a kind not yet loaded in the registry arrive at once: each imports
    (or waits for the import of) the module and runs."""
    checkers._loaded.pop("udp", None)
    outs = await asyncio.gather(
        *(
            CHECKERS["udp"](wire.UdpSpec(host="127.0.0.1", port=9), timeout=0.5, source_address=None)
            for _ in range(5)
        )
    )
    assert len(outs) == 5 and all(o.status in (Status.OK, Status.FAIL) for o in outs)
    assert checkers._loaded["udp"] is importlib.import_module("probefleet.probe.checkers.udp").check
