"""The one registry of check kinds: kind string = module name = msgspec tag.

A kind's module is imported when the process first runs that kind, not at start: a probe
that only checks HTTP never loads cryptography (tls), grpc, asyncssh, the database drivers,
aiomqtt or Playwright. Each of those cost a started probe memory (cryptography alone about
8 MiB RSS) for kinds most probes never run (docs/architecture/scale.md, "Memory")."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from probefleet.probe.checkers.base import Checker, Outcome

KINDS = (
    "http",
    "tcp",
    "udp",
    "icmp",
    "dns",
    "tls",
    "api_flow",
    "websocket",
    "grpc",
    "ssh",
    "postgres",
    "mysql",
    "redis",
    "smtp",
    "imap",
    "pop3",
    "mqtt",
    "browser",
    "diagnose",
)

# The libraries a kind needs beyond the probe's own dependencies (the `checks`, `browser` and
# `controller` extras), looked up with find_spec so that knowing them imports nothing; a probe
# without one starts and leaves the kind out of its capabilities. A checker module that
# declares REQUIRES itself must agree (tests/probe/test_registry.py).
REQUIRES: dict[str, tuple[str, ...]] = {
    "tls": ("cryptography",),
    "grpc": ("grpc", "grpc_health"),
    "ssh": ("asyncssh",),
    "postgres": ("asyncpg",),
    "mysql": ("pymysql",),
    "redis": ("redis",),
    "mqtt": ("aiomqtt",),
    "browser": ("playwright",),
}

# Kinds that also depend on the host (a function of the kind's module, cheap to import).
HOST_CHECKS = {"icmp": "available", "browser": "available"}

_loaded: dict[str, Callable[..., Awaitable[Outcome]]] = {}


def module_name(kind: str) -> str:
    return f"{__name__}.{kind}"


async def _load_then_check(kind: str, spec: Any, budget: float, source_address: str | None) -> Outcome:
    # Off the event loop: the first import of a kind (grpc, Playwright: a few hundred ms) would
    # otherwise stall every check in flight and inflate their timings. Concurrent first checks
    # wait on the import lock. The import is spent from the check's own budget, so the result
    # still comes back before the job's deadline.
    started = time.monotonic()
    module = await asyncio.to_thread(importlib.import_module, module_name(kind))
    check = _loaded[kind] = module.check
    left = max(budget - (time.monotonic() - started), 0.0)
    return await check(spec, timeout=left, source_address=source_address)


def _deferred(kind: str) -> Checker:
    def check(spec: Any, *, timeout: float, source_address: str | None) -> Awaitable[Outcome]:
        loaded = _loaded.get(kind)
        if loaded is not None:
            return loaded(spec, timeout=timeout, source_address=source_address)
        return _load_then_check(kind, spec, timeout, source_address)

    check.__qualname__ = check.__name__ = f"check_{kind}"
    return check


CHECKERS: dict[str, Checker] = {kind: _deferred(kind) for kind in KINDS}


def importable(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def capabilities(checkers: Mapping[str, Checker] = CHECKERS) -> list[str]:
    """The kinds of `checkers` this process can run here, announced in every heartbeat:
    all of them but ICMP when the host allows neither raw nor unprivileged ICMP sockets,
    browser when no Chromium is installed, and those whose library (REQUIRES) is not."""

    def host_allows(kind: str) -> bool:
        check = HOST_CHECKS.get(kind)
        return check is None or bool(getattr(importlib.import_module(module_name(kind)), check)())

    return sorted(kind for kind in checkers if importable(*REQUIRES.get(kind, ())) and host_allows(kind))


__all__ = ["CHECKERS", "KINDS", "REQUIRES", "Checker", "Outcome", "capabilities"]
