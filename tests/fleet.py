"""Test helpers: in-process probes per region and a target that answers by caller address.

Regions are simulated inside 127.0.0.0/8: each probe binds its outgoing connections to
its own source address, and the target decides per caller whether to fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from probefleet.probe.agent import Agent
from probefleet.probe.config import ProbeConfig

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
    for agent in agents:
        await agent.stop()


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
