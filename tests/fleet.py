"""Test helpers: in-process probes per region and a target that answers by caller address.

Regions are simulated inside 127.0.0.0/8: each probe binds its outgoing connections to
its own source address, and the target decides per caller whether to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from probefleet.controller.cluster.trust import FleetTrust, generate, server_config
from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig
from probefleet.shared import natscreds
from probefleet.shared.devstack import NatsServer

REGION_ADDRESSES = {"us-east": "127.0.0.11", "eu-west": "127.0.0.12", "ap-south": "127.0.0.13"}


async def start_probes(
    nats_url: str, regions: Iterable[str] = REGION_ADDRESSES, **overrides: object
) -> list[Agent]:
    agents = []
    for region in regions:
        cfg = ProbeConfig(
            nats_url=nats_url,
            region=region,
            source_address=REGION_ADDRESSES[region],
            probe_id=f"test-{region}",
            heartbeat_interval=0.5,
            **overrides,
        )  # type: ignore[arg-type]
        agent = Agent(cfg)
        await agent.start()
        agents.append(agent)
    return agents


async def stop_probes(agents: Iterable[Agent]) -> None:
    """Stops the probes at once, not one after another: each stop drains (up to about a
    second for the jobs it holds ahead of their due time)."""
    results = await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@dataclass
class RegionalTarget:
    """An HTTP target; callers whose address is in `failing` get a 503."""

    failing: set[str] = field(default_factory=set)
    hits: dict[str, int] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    url: str = ""

    def fail_all(self) -> None:
        self.failing = set(REGION_ADDRESSES.values())

    def fail_regions(self, *regions: str) -> None:
        self.failing = {REGION_ADDRESSES[r] for r in regions}

    def recover(self) -> None:
        self.failing = set()

    async def _handle(self, request: web.Request) -> web.Response:
        caller = request.remote or ""
        self.hits[caller] = self.hits.get(caller, 0) + 1
        if caller in self.failing:
            return web.Response(status=503, text="unavailable")
        return web.Response(text="ok")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/health"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class SecureNats:
    """A nats-server in operator mode with TLS, from a fresh trust directory (the fleet's
    secure path, as `probefleet dev` and production run it)."""

    server: NatsServer
    trust: FleetTrust
    trust_dir: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ca_file(self) -> Path:
        return self.trust_dir / "ca.pem"

    @property
    def controller_creds(self) -> Path:
        return self.trust_dir / "controller.creds"

    def probe_creds(self, path: Path, *, region: str, probe_id: str) -> tuple[Path, str]:
        """A probe credential minted as enrollment does: (its .creds file, its public key)."""
        seed, public = natscreds.new_user_keypair()
        jwt = self.trust.issue_probe(public_key=public, probe_id=probe_id, region=region)
        natscreds.write_creds(path, jwt, seed)
        return path, public

    def probe_config(self, creds: Path, *, region: str, probe_id: str, **overrides: object) -> ProbeConfig:
        return ProbeConfig(
            nats_url=self.url,
            region=region,
            probe_id=probe_id,
            nats_credentials=str(creds),
            nats_tls_ca=str(self.ca_file),
            heartbeat_interval=0.5,
            **overrides,
        )  # type: ignore[arg-type]


def start_secure_nats(root: Path, *, leafnodes: bool = False, verify_clients: bool = False) -> SecureNats:
    """Generate a trust directory under `root` (or use the one there) and start a secure
    nats-server on it (the caller stops `.server`). `leafnodes`: also accept leaf nodes (with
    TLS) at `.server.leaf_url`; `verify_clients`: mutual TLS."""
    trust_dir = root / "trust"
    generate(trust_dir, hostnames=["localhost"])
    conf = server_config(
        trust_dir,
        resolver_dir=root / "nats" / "resolver",
        leafnode_listen="127.0.0.1:-1" if leafnodes else None,
        verify_clients=verify_clients,
    )
    server = NatsServer(root / "nats", trust_conf=conf, tls=True, leafnodes=leafnodes)
    server.start()
    trust = FleetTrust.load(trust_dir, nats_urls=[server.url])
    return SecureNats(server=server, trust=trust, trust_dir=trust_dir)
