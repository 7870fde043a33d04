"""The chaos harness: the real system as processes, faults on demand, invariants afterwards.

PostgreSQL (embedded) and nats-server (one server, or a three-node JetStream cluster) run
as processes of their own; controllers and probes run as `python -m probefleet.shared.cli
... serve|run` children, so SIGKILL, SIGSTOP and restarts are the real thing. Probes bind
to 127.0.0.11/.12/.13, one per region. Beside them, on an event loop in a thread of its own
(so it answers whatever the test's loop is doing), the `Observer` serves the HTTP targets
whose up/down state a test flips, a webhook catcher that records every notification, a
NATS subscription that records every result a probe published, and a poller that times
`/api/v1/health` and `GET /api/v1/monitors` on every live controller.

`Stack.check` then reads the database, the stream and those records and asserts the
invariants of issue 15: no result lost (every published result is stored, or still held
by the stream for redelivery) or stored twice, no false `down` and no region event the
faults do not explain, no duplicate notification, no real outage missed for more than two
intervals, the API answering (200 or 503) within 1 s whenever its controller is alive.

PROBEFLEET_CHAOS=full (`make chaos`) selects the long durations and repetitions; without
it every scenario runs in its short form inside `make test`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import msgspec
import nats
from aiohttp import web
from nats.js.errors import NotFoundError

from probefleet.controller.engine.diagnostics import DIAGNOSTIC_ATTEMPT
from probefleet.controller.storage import api_keys, db
from probefleet.controller.storage import results as results_store
from probefleet.shared import subjects, wire
from probefleet.shared.devstack import (
    NatsServer,
    PostgresServer,
    _die_with_parent,
    _tcp_open,
    create_database,
    free_port,
    nats_server_binary,
)
from tests.fleet import REGION_ADDRESSES
from tests.helpers import eventually

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("PROBEFLEET_CHAOS") == "full"
INTERVAL = 1
# Monitors at 1 s in three regions: the load every scenario runs under.
STEADY = 100
FLIPS = 3
# The bound of issue 15 on every answer of a live controller (a correctness bound, not a
# benchmark): /health answers from memory, other requests give up after database_timeout.
API_BOUND = 1.0
DATABASE_TIMEOUT = 0.8


def pick(full: T, short: T) -> T:
    """The full run's value under PROBEFLEET_CHAOS=full, else the short form's."""
    return full if FULL else short


# Leases: a controller renews its lease every HEARTBEAT s and it lasts three of them.
HEARTBEAT = 0.5
LEASE = 3 * HEARTBEAT
# How long the results a killed controller fetched wait for another one (`results_ack_wait`):
# the default (30 s) in the full run, 5 s in the short form, so their rounds are decided
# sooner after a kill (a batch being stored is marked in progress meanwhile either way).
ACK_WAIT = pick(30.0, 5.0)


@dataclass
class Not:
    """A falsy answer that says why: what `eventually` names when the bound runs out (a
    dict or a list that says why would be truthy, and end the wait at once)."""

    why: Any

    def __bool__(self) -> bool:
        return False


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child process of the stack (its own process group, dies with us)."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent(signal.SIGKILL),
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no goodbye."""
        if self.proc is not None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        self.terminate()
        self.reap(timeout)

    def terminate(self) -> None:
        """SIGTERM: a clean shutdown begins (reap() waits for it)."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)

    def reap(self, timeout: float = 20.0) -> None:
        """Wait for the process to exit after terminate(); SIGKILL after `timeout` s."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "probefleet.shared.cli", *args]


@dataclass
class Controller(Proc):
    port: int = 0
    config: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, within: float = 60.0) -> None:
        """Until /api/v1/health answers at all (200, or 503 while a dependency is down)."""

        async def answers() -> bool:
            if not self.running:
                raise AssertionError(f"controller {self.name} exited: see {self.log}")
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{self.base}/api/v1/health", timeout=aiohttp.ClientTimeout(total=2)) as r,
                ):
                    return r.status in (200, 503)
            except (aiohttp.ClientError, TimeoutError):
                return False

        await eventually(answers, timeout=within, interval=0.1, what=f"controller {self.name} serving")


def controller(root: Path, name: str, database: str, nats_url: str, *, replicas: int = 1) -> Controller:
    config = root / f"{name}.toml"
    config.write_text(
        f'controller_id = "{name}"\n'
        "round_grace = 1.0\n"
        "probe_heartbeat_interval = 0.5\n"
        f"controller_heartbeat_interval = {HEARTBEAT}\n"
        f"results_ack_wait = {ACK_WAIT}\n"
        f"database_timeout = {DATABASE_TIMEOUT}\n"
        "notification_channels_allow_private = true\n"
        # Plain NATS on loopback: the fleet's credentials and TLS are tested elsewhere.
        "nats_insecure = true\n"
        f"nats_stream_replicas = {replicas}\n"
        "rollup_interval = 2.0\n"
        'regions = [{id = "us-east"}, {id = "eu-west"}, {id = "ap-south"}]\n'
    )
    port = free_port()
    argv = _cli("controller", "serve", "--config", str(config), "--port", str(port))
    env = {"PROBEFLEET_DATABASE_URL": database, "PROBEFLEET_NATS_URL": nats_url}
    return Controller(name=name, argv=argv, log=root / f"{name}.log", env=env, port=port, config=config)


def probe(root: Path, region: str, nats_url: str) -> Proc:
    config = root / f"probe-{region}.toml"
    config.write_text("heartbeat_interval = 0.5\n")
    argv = _cli(
        "probe",
        "run",
        "--region",
        region,
        "--source-address",
        REGION_ADDRESSES[region],
        "--nats-url",
        nats_url,
        "--insecure-nats",
        "--probe-id",
        f"chaos-{region}",
        "--config",
        str(config),
        "--log-level",
        "WARNING",
    )
    return Proc(name=f"probe-{region}", argv=argv, log=root / f"probe-{region}.log")


@dataclass
class NatsNode(Proc):
    port: int = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    """Three nats-servers with JetStream, routed to each other: the production topology."""

    def __init__(self, root: Path, size: int = 3) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{c}" for _, c in ports)
        self.nodes: list[NatsNode] = []
        for i, (client, route) in enumerate(ports):
            conf = root / f"n{i}.conf"
            store = json.dumps(str(root / f"n{i}-js"))
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{client}\n"
                f"jetstream {{ store_dir: {store}, max_memory_store: 64M, max_file_store: 2G }}\n"
                f"cluster {{ name: chaos, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
            )
            argv = [nats_server_binary(), "-c", str(conf)]
            self.nodes.append(NatsNode(name=f"n{i}", argv=argv, log=root / f"n{i}.log", port=client))

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    async def start(self) -> None:
        for node in self.nodes:
            node.start()
        await self.ready()

    async def ready(self) -> None:
        """Every running node takes clients and JetStream has a meta leader."""
        for node in self.nodes:
            if node.running:
                await eventually(lambda n=node: _tcp_open("127.0.0.1", n.port), what=f"{node.name} listening")

        async def jetstream() -> bool:
            try:
                nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0)
            except Exception:
                return False
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:
                return False
            finally:
                await nc.close()

        await eventually(jetstream, timeout=30, interval=0.2, what="JetStream meta leader")

    def stop(self) -> None:
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.reap()


# ---------------------------------------------------------------- the observer


@dataclass
class Sample:
    at: float
    controller: str
    path: str
    status: int | str
    latency: float
    alive: bool  # the controller was alive when the request started and when it ended


@dataclass
class Polled:
    base: str
    key: str
    alive: bool = False
    epoch: int = 0  # bumped at each kill and restart: a request spanning one does not count


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def result_key(
    monitor_id: int, due: float | dt.datetime, region: str, attempt: int
) -> tuple[int, int, str, int]:
    """A result's identity, with the due time in whole microseconds as the database holds it.

    A due in seconds (a result as the probe published it) is turned into a timestamp the
    way the controller stores it (storage/results.ts: the float's exact value to the
    nearest microsecond), not as round(seconds * 1e6): near 1.8e9 s that product is a
    quarter of a microsecond coarse, and for about one due in eight whose microseconds end
    near a half it lands on the other neighbour. Scheduled rounds' dues are on a millisecond
    grid and never do; a diagnosis's (attempt 2000) or an on-demand run's due is the raw
    time.time() of its sending, so such a result, stored under its true microsecond, was
    counted as published and neither stored nor held."""
    at = due if isinstance(due, dt.datetime) else results_store.ts(due)
    return (monitor_id, (at - _EPOCH) // _MICROSECOND, region, attempt)


class Observer:
    """Targets, webhook catcher, results tap and API poller on their own loop and thread."""

    def __init__(self, nats_urls: list[str]) -> None:
        self.nats_urls = nats_urls
        self.down: set[str] = set()
        self.hits: Counter[str] = Counter()
        self.deliveries: list[dict[str, Any]] = []
        self.published: Counter[tuple[int, int, str, int]] = Counter()
        # Results of a check that ran (not `skipped`: a job taken after its deadline).
        self.checked: set[tuple[int, int, str, int]] = set()
        # Check jobs as published by the controllers (a round's jobs go out once, by the
        # controller whose insert created the round; the tap may miss some, never add any).
        self.jobs: Counter[tuple[int, int, str, int]] = Counter()
        self.lock = threading.Lock()  # the three above change on the observer's thread
        self.samples: list[Sample] = []
        self.controllers: dict[str, Polled] = {}
        self.target_port = 0
        self.hook_port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-observer", daemon=True)
        self._stop = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: nats.NATS | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def target_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.target_port}/t/{name}"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.hook_port}/hook"

    def watch(self, name: str, base: str, key: str) -> None:
        self.controllers[name] = Polled(base=base, key=key)

    def set_alive(self, name: str, alive: bool) -> None:
        polled = self.controllers[name]
        polled.alive = alive
        polled.epoch += 1

    # -- on the observer's loop

    async def _start(self) -> None:
        target = web.Application()
        target.router.add_route("*", "/t/{name}", self._target)
        hook = web.Application()
        hook.router.add_post("/hook", self._hook)
        ports = []
        for app in (target, hook):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            self._runners.append(runner)
            ports.append(runner.addresses[0][1])
        self.target_port, self.hook_port = ports

        async def quiet(e: Exception) -> None:
            """NATS down is what several scenarios do: no traceback per reconnect attempt."""

        self._nc = await nats.connect(
            self.nats_urls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            name="chaos-tap",
            error_cb=quiet,
        )
        await self._nc.subscribe(subjects.results_all(), cb=self._tap)
        await self._nc.subscribe(subjects.jobs(">"), cb=self._tap_jobs)  # region and kind subjects
        # The server has both subscriptions before anything the tap must see is published.
        await self._nc.flush()
        self._tasks.append(asyncio.create_task(self._poll()))

    async def _close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5)
        for runner in self._runners:
            await runner.cleanup()

    async def _target(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        if name in self.down:
            return web.Response(status=503, text="down")
        return web.Response(text="ok")

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.deliveries.append(
            {
                "at": time.time(),
                "event": body.get("event"),
                "event_id": body.get("event_id"),
                "delivery": request.headers.get("X-Probefleet-Delivery"),
                "monitor_id": (body.get("monitor") or {}).get("id"),
                "incident_id": (body.get("incident") or {}).get("id"),
            }
        )
        return web.Response(text="ok")

    async def _tap(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            for r in wire.decode_results(msg.data):  # one result or a probe's batch
                key = result_key(r.monitor_id, r.due, r.region, r.attempt)
                with self.lock:
                    self.published[key] += 1
                    if r.status != wire.Status.SKIPPED:
                        self.checked.add(key)

    async def _tap_jobs(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            for j in wire.decode_jobs(msg.data):  # one job or a batch of a region's jobs
                with self.lock:
                    self.jobs[result_key(j.monitor_id, j.due, j.region, j.attempt)] += 1

    def jobs_seen(self) -> Counter[tuple[int, int, str, int]]:
        with self.lock:
            return Counter(self.jobs)

    def results_seen(self) -> tuple[Counter[tuple[int, int, str, int]], set[tuple[int, int, str, int]]]:
        """Copies of (published, checked), taken consistently."""
        with self.lock:
            return Counter(self.published), set(self.checked)

    async def _poll(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                calls = [
                    self._sample(session, name, path)
                    for name, polled in list(self.controllers.items())
                    if polled.alive
                    for path in ("/api/v1/health", "/api/v1/monitors?per_page=5")
                ]
                await asyncio.gather(*calls, asyncio.sleep(0.25))

    async def _sample(self, session: aiohttp.ClientSession, name: str, path: str) -> None:
        polled = self.controllers[name]
        epoch = polled.epoch
        started = time.monotonic()
        status: int | str
        try:
            headers = {"Authorization": f"Bearer {polled.key}"}
            async with session.get(polled.base + path, headers=headers) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            status = type(e).__name__
        latency = time.monotonic() - started
        alive = polled.alive and polled.epoch == epoch
        self.samples.append(Sample(time.time(), name, path, status, latency, alive))


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    root: Path
    cluster: bool = False
    postgres: PostgresServer = field(init=False)
    nats: NatsServer | None = None
    nats_cluster: NatsCluster | None = None
    observer: Observer = field(init=False)
    controllers: dict[str, Controller] = field(default_factory=dict)
    probes: dict[str, Proc] = field(default_factory=dict)
    database: str = ""
    pg_root: Path = field(init=False)
    pool: asyncpg.Pool | None = None
    key: str = ""
    steady: list[int] = field(default_factory=list)
    flips: dict[str, int] = field(default_factory=dict)
    # Measured figures of each scenario, by name (docs/reliability.md, bench/RESULTS.md).
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        """The URL a process is given: one server; in a cluster, a seed whose INFO names the rest."""
        if self.nats_cluster is not None:
            return self.nats_cluster.urls[0]
        assert self.nats is not None
        return self.nats.url

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # PostgreSQL runs as nobody when we are root: its data goes in a folder of ours that
        # nobody can reach, not in a stand-in under /var/tmp named after the path.
        self.pg_root = Path(tempfile.mkdtemp(prefix="probefleet-chaos-"))
        self.pg_root.chmod(0o755)
        self.postgres = PostgresServer(self.pg_root / "postgres", ephemeral=False, durable=False)
        self.postgres.start()
        await create_database(self.postgres.dsn(), "chaos")
        self.database = self.postgres.dsn("chaos")
        if self.cluster:
            self.nats_cluster = NatsCluster(self.root / "nats")
            await self.nats_cluster.start()
            urls = self.nats_cluster.urls
        else:
            self.nats = NatsServer(self.root / "nats")
            self.nats.start()
            urls = [self.nats.url]
        self.observer = Observer(urls)
        self.observer.start()
        # Probes first: a controller that starts before any probe rightly finds its regions
        # unavailable.
        for region in REGION_ADDRESSES:
            self.probes[region] = probe(self.root, region, self.nats_url)
            self.probes[region].start()
        await self.start_controller("ctl-a")
        await self._populate()

    async def start_controller(self, name: str) -> Controller:
        ctl = self.controllers.get(name)
        if ctl is None:
            ctl = self.controllers[name] = controller(
                self.root, name, self.database, self.nats_url, replicas=3 if self.cluster else 1
            )
        ctl.start()
        await ctl.ready()
        if not self.key:
            self.pool = await db.create_pool(self.database, max_size=4)
            self.key, _ = await api_keys.create(self.pool, "chaos", ["admin"], rate_limit=1_000_000)
        if name not in self.observer.controllers:
            self.observer.watch(name, ctl.base, self.key)
        self.observer.set_alive(name, True)
        return ctl

    def kill_controller(self, name: str) -> None:
        self.observer.set_alive(name, False)
        self.controllers[name].kill()

    async def restart_controller(self, name: str) -> None:
        await self.start_controller(name)

    async def _populate(self) -> None:
        base = next(iter(self.controllers.values())).base
        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession(base_url=base, headers=headers) as api:
            r = await api.post(
                "/api/v1/notification-channels",
                json={"name": "catcher", "kind": "webhook", "config": {"url": self.observer.hook_url}},
            )
            assert r.status == 201, await r.text()
            channel = (await r.json())["data"]["id"]
            events = [
                "incident.opened",
                "incident.resolved",
                "monitor.down",
                "monitor.up",
                "region.unavailable",
            ]
            r = await api.post(
                "/api/v1/notification-rules", json={"channel_ids": [channel], "events": events}
            )
            assert r.status == 201, await r.text()
        names = [f"steady-{i}" for i in range(STEADY)] + [f"flip-{i}" for i in range(FLIPS)]
        for name, mid in (await self._create_monitors(names, INTERVAL)).items():
            if name.startswith("flip-"):
                self.flips[name] = mid
            else:
                self.steady.append(mid)
        await self.all_up()

    async def _create_monitors(self, names: list[str], interval: int) -> dict[str, int]:
        """HTTP monitors of the observer's targets `names`, created eight at a time; their ids."""
        base = next(c for c in self.controllers.values() if c.running).base
        headers = {"Authorization": f"Bearer {self.key}"}
        ids: dict[str, int] = {}
        async with aiohttp.ClientSession(base_url=base, headers=headers) as api:

            async def create(name: str) -> None:
                body = {
                    "name": name,
                    "url": self.observer.target_url(name),
                    "check_interval": interval,
                    "timeout": 1,
                }
                async with api.post("/api/v1/monitors", json=body) as r:
                    assert r.status == 201, await r.text()
                    ids[name] = (await r.json())["data"]["id"]

            for at in range(0, len(names), 8):
                await asyncio.gather(*(create(n) for n in names[at : at + 8]))
        return ids

    async def add_monitors(self, prefix: str, n: int, interval: int) -> list[int]:
        """`n` more monitors of targets that stay up (checked like the steady ones), at
        `interval` s; their ids, once every monitor is up in every region."""
        ids = list((await self._create_monitors([f"{prefix}-{i}" for i in range(n)], interval)).values())
        self.steady.extend(ids)
        await self.all_up()
        return ids

    async def all_up(self) -> None:
        """Until every monitor is up in every region."""
        total = len(self.steady) + len(self.flips)

        async def up() -> bool | Not:
            rows = await self.db.fetch(
                "SELECT status, unavailable_regions <> '{}' AS partial, count(*) AS n"
                " FROM monitors GROUP BY 1, 2"
            )
            counts = {(r["status"], r["partial"]): r["n"] for r in rows}
            return counts.get(("up", False)) == total or Not(counts)

        try:
            await eventually(up, timeout=60, interval=0.2, what="every monitor up in every region")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tails()}") from None

    async def scheduled(self, names: list[str]) -> dict[str, int]:
        """Monitors in each named controller's schedule (`probefleet_monitors_scheduled`)."""
        out = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            for name in names:
                async with s.get(f"{self.controllers[name].base}/metrics") as r:
                    text = await r.text()
                line = next(x for x in text.splitlines() if x.startswith("probefleet_monitors_scheduled "))
                out[name] = int(float(line.split()[1]))
        return out

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every process's log, for a failure's message."""
        out = []
        for p in [*self.controllers.values(), *self.probes.values()]:
            with contextlib.suppress(OSError):
                tail = p.log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {p.log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    async def stop(self) -> None:
        # All at once: each takes a second or two to shut down cleanly.
        procs = [*self.probes.values(), *self.controllers.values()]
        for p in procs:
            p.terminate()
        for p in procs:
            p.reap()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)
        if hasattr(self, "observer"):
            self.observer.stop()
        if self.nats_cluster is not None:
            self.nats_cluster.stop()
        if self.nats is not None:
            self.nats.stop()
        if hasattr(self, "postgres"):
            self.postgres.ephemeral = True  # removes the data
            self.postgres.stop()
            shutil.rmtree(self.pg_root, ignore_errors=True)

    # -- scenario helpers

    async def steady_for(self, seconds: float) -> None:
        """Let the system run `seconds` under its load (a scripted wait: faults happen in it)."""
        await asyncio.sleep(seconds)

    async def rounds_decided_after(self, since: float, count: int, within: float = 30.0) -> None:
        """Until `count` rounds due after `since` are decided: the pipeline moves again."""

        async def moved() -> bool:
            n = await self.db.fetchval(
                "SELECT count(*) FROM rounds WHERE due > to_timestamp($1) AND verdict IS NOT NULL", since
            )
            return bool(n >= count)

        await eventually(moved, timeout=within, interval=0.2, what=f"{count} rounds decided after the fault")

    async def outage(self, name: str, seconds: float) -> tuple[float, float]:
        """Take flip target `name` down for `seconds`; return (start, end) in Unix time."""
        start = time.time()
        self.observer.down.add(name)
        await asyncio.sleep(seconds)
        self.observer.down.discard(name)
        return start, time.time()

    # -- invariants

    async def check(
        self,
        scenario: str,
        since: float,
        *,
        outages: dict[str, tuple[float, float]] | None = None,
        region_events: set[str] = frozenset(),  # type: ignore[assignment]
        unknown_windows: list[tuple[float, float]] | None = None,
        settle: float = 60.0,
        open_age: float = 45.0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Assert the invariants over what happened since `since`; return the scenario's figures.

        `outages`: flip targets really down (start, end); `region_events`: regions whose probe
        the scenario took away, so their region events are true; `unknown_windows`: spans of
        due times whose jobs may have reached no probe (NATS down, a controller killed while
        publishing), so their rounds may be unknown if no probe answered them."""
        outages = outages or {}
        await self._settle(settle, open_age)
        figures: dict[str, Any] = {"scenario": scenario}
        violations: list[str] = []
        parts: list[Callable[[], Awaitable[dict[str, Any]]]] = [
            self._check_results,
            lambda: self._check_verdicts(since, outages, region_events, unknown_windows),
            lambda: self._check_notifications(since, outages, region_events),
            lambda: self._check_api(since),
        ]
        # Every part runs, so that a failing scenario still reports its figures.
        for part in parts:
            try:
                figures.update(await part())
            except AssertionError as e:
                violations.append(str(e))
        figures.update(extra or {})
        figures["violations"] = violations
        self.figures[scenario] = figures
        _report(figures)
        assert not violations, "\n".join(violations)
        return figures

    async def reset_pool(self) -> None:
        """A fresh pool for the test's own reads (after PostgreSQL restarted under the old one)."""
        if self.pool is not None:
            self.pool.terminate()
        self.pool = await db.create_pool(self.database, max_size=4)

    async def _settle(self, within: float, open_age: float) -> None:
        """Until every flip monitor is up again and no round due more than `open_age` s ago
        is open (a round missing results held by a killed controller waits for their
        redelivery after JetStream's ack_wait, 30 s)."""

        async def settled() -> bool | Not:
            flips = await self.db.fetchval(
                "SELECT count(*) FROM monitors WHERE id = ANY($1) AND status <> 'up'",
                list(self.flips.values()),
            )
            open_ = await self.db.fetch(
                "SELECT monitor_id, due, regions, answered, deadline FROM rounds"
                " WHERE closed_at IS NULL AND due < now() - make_interval(secs => $1) ORDER BY due",
                open_age,
            )
            if flips == 0 and not open_:
                return True
            now = time.time()
            oldest = [
                (
                    r["monitor_id"],
                    round(r["due"].timestamp() - now, 1),
                    list(r["regions"]),
                    list(r["answered"]),
                )
                for r in open_[:3]
            ]
            return Not(
                {"flips_not_up": flips, "old_rounds_open": len(open_), "oldest (due s from now)": oldest}
            )

        await eventually(settled, timeout=within, interval=0.25, what="flip monitors up, old rounds closed")

    async def _stream_held(self, js: Any) -> set[tuple[int, int, str, int]]:
        """The results still in the stream (a message holds one result or a probe's batch)."""
        info = await js.stream_info(subjects.RESULTS_STREAM)
        held: set[tuple[int, int, str, int]] = set()
        if info.state.messages > 20_000:
            raise AssertionError(f"{info.state.messages} results still in the stream: not caught up")
        seq = info.state.first_seq
        while seq <= info.state.last_seq:
            with contextlib.suppress(NotFoundError):
                m = await js.get_msg(subjects.RESULTS_STREAM, seq)
                if m.data is not None:
                    for r in wire.decode_results(m.data):
                        held.add(result_key(r.monitor_id, r.due, r.region, r.attempt))
            seq += 1
        return held

    async def _explain(self, rounds: list[asyncpg.Record], since: float) -> list[dict[str, Any]]:
        """What the database holds of these rounds: regions expected and answered, when they
        closed and when their results arrived (seconds after the scenario began)."""
        out = []
        for r in rounds[:5]:
            row = await self.db.fetchrow(
                "SELECT regions, answered, deadline, closed_at, attempt FROM rounds"
                " WHERE monitor_id = $1 AND due = $2",
                r["monitor_id"],
                r["due"],
            )
            results = await self.db.fetch(
                "SELECT region, status, received_at FROM check_results WHERE monitor_id = $1 AND due = $2",
                r["monitor_id"],
                r["due"],
            )
            key = result_key(r["monitor_id"], r["due"], "", 0)[:2]
            seen = sorted(k[2] for k in self.observer.results_seen()[0] if k[:2] == key)

            def at(t: dt.datetime | None) -> float | None:
                return None if t is None else round(t.timestamp() - since, 2)

            out.append(
                {
                    "monitor_id": r["monitor_id"],
                    "due": round(r["due"].timestamp() - since, 2),
                    "regions": row and list(row["regions"]),
                    "answered": row and list(row["answered"]),
                    "deadline": row and at(row["deadline"]),
                    "closed": row and at(row["closed_at"]),
                    "results": [(x["region"], x["status"], at(x["received_at"])) for x in results],
                    "published_by_probes": seen,
                }
            )
        return out

    async def _check_results(self) -> dict[str, Any]:
        """Every result a probe published is stored, or still in the stream (a dead
        controller's unacknowledged results come back after ack_wait); none stored twice."""
        published = dict(self.observer.results_seen()[0])
        nc = await nats.connect(self.observer.nats_urls, connect_timeout=2)
        try:
            js = nc.jetstream()
            before = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
            missing: set[tuple[int, int, str, int]] = set(published)
            for _ in range(20):
                held = await self._stream_held(js)
                rows = await self.db.fetch("SELECT monitor_id, due, region, attempt FROM check_results")
                stored = {result_key(r["monitor_id"], r["due"], r["region"], r["attempt"]) for r in rows}
                missing = missing - stored - held
                if not missing:
                    break
                await asyncio.sleep(0.5)
            after = await js.consumer_info(subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
        finally:
            await nc.close()
        assert not missing, f"{len(missing)} published results neither stored nor held: {sorted(missing)[:5]}"
        twice = await self.db.fetchval(
            "SELECT count(*) - count(DISTINCT (monitor_id, due, region, attempt)) FROM check_results"
        )
        assert twice == 0, f"{twice} results stored twice"
        # What was acknowledged before the count is stored: a message carries one result or a
        # probe's batch, so at least one result a message. (The stream keeps no acknowledged
        # message, so how many results each carried cannot be read back; the tap is a core
        # subscription that may miss messages, so it bounds nothing from above.)
        floor, delivered = before.ack_floor.stream_seq, after.delivered.stream_seq
        assert floor <= len(stored), (floor, len(stored), delivered)
        return {
            "results_published": len(published),
            "results_republished": sum(published.values()) - len(published),
            "results_stored": len(stored),
            # Incidents' diagnoses among them (due at the raw time they were sent, no round).
            "diagnoses_stored": sum(k[3] == DIAGNOSTIC_ATTEMPT for k in stored),
            "results_held_for_redelivery": len(held - stored),
            "stream_messages_delivered": delivered,
        }

    async def _check_verdicts(
        self,
        since: float,
        outages: dict[str, tuple[float, float]],
        region_events: set[str],
        unknown_windows: list[tuple[float, float]] | None,
    ) -> dict[str, Any]:
        steady = self.steady
        bad = await self.db.fetch(
            "SELECT monitor_id, due, verdict FROM rounds WHERE monitor_id = ANY($1)"
            " AND due > to_timestamp($2) AND verdict IN ('down', 'degraded')",
            steady,
            since,
        )
        if bad:
            # The evidence: what each region answered for the first of them.
            first = bad[0]
            answers = await self.db.fetch(
                "SELECT region, probe_id, status, reason, message FROM check_results"
                " WHERE monitor_id = $1 AND due = $2",
                first["monitor_id"],
                first["due"],
            )
            raise AssertionError(
                f"false down/degraded rounds of monitors whose target was up: {bad[:5]};"
                f" answers of the first: {[dict(a) for a in answers]}"
            )
        incidents = await self.db.fetch(
            "SELECT monitor_id, started_at FROM incidents WHERE monitor_id = ANY($1)", steady
        )
        assert not incidents, f"false incidents: {incidents[:5]}"
        down_events = await self.db.fetchval(
            "SELECT count(*) FROM events"
            " WHERE monitor_id = ANY($1) AND kind IN ('monitor.down', 'incident.opened')",
            steady,
        )
        assert down_events == 0, f"{down_events} false down events"
        unknown = await self.db.fetch(
            "SELECT monitor_id, due FROM rounds WHERE due > to_timestamp($1) AND verdict = 'unknown'", since
        )
        # An unknown round is right only when no probe checked it because none could: its
        # jobs reached no probe (NATS down, clients moving to another node), reached them
        # after their deadline (`skipped`: jobs a client kept while NATS was down), or were
        # never published (the controller died between writing the round and its jobs).
        answered = {k[:2] for k in self.observer.results_seen()[1]}
        windows = unknown_windows or []
        false_unknown = [
            u
            for u in unknown
            if result_key(u["monitor_id"], u["due"], "", 0)[:2] in answered
            or not any(lo <= u["due"].timestamp() <= hi for lo, hi in windows)
        ]
        if false_unknown:
            explained = await self._explain(false_unknown, since)
            raise AssertionError(f"{len(false_unknown)} rounds unknown with the fleet reachable: {explained}")
        regions = await self.db.fetch(
            "SELECT kind, payload->>'region' AS region, occurred_at FROM events"
            " WHERE kind LIKE 'region.%' AND occurred_at > to_timestamp($1) ORDER BY id",
            since,
        )
        false_regions = Counter(
            (r["kind"], r["region"], round(r["occurred_at"].timestamp() - since, 1))
            for r in regions
            if r["region"] not in region_events
        )
        assert not false_regions, (
            f"{sum(false_regions.values())} region events the faults do not explain"
            f" ((kind, region, seconds after the scenario began): count): {dict(false_regions)}"
        )
        detection = {}
        for name, (start, _end) in outages.items():
            mid = self.flips[name]
            first = await self.db.fetchval(
                "SELECT min(due) FROM rounds"
                " WHERE monitor_id = $1 AND verdict = 'down' AND due >= to_timestamp($2)",
                mid,
                start,
            )
            assert first is not None, f"outage of {name} never seen down"
            late = first.timestamp() - start
            assert late <= 2 * INTERVAL, f"outage of {name} first seen down {late:.2f} s after it began"
            opened = await self.db.fetch(
                "SELECT status FROM incidents WHERE monitor_id = $1 AND started_at >= to_timestamp($2)",
                mid,
                start - INTERVAL,
            )
            assert [r["status"] for r in opened] == ["resolved"], f"{name}: incidents {opened}"
            detection[name] = round(late, 2)
        rounds = await self.db.fetchval(
            "SELECT count(*) FROM rounds WHERE due > to_timestamp($1) AND verdict IS NOT NULL", since
        )
        return {
            "rounds_decided": rounds,
            "rounds_unknown": len(unknown),
            "region_events": len(regions),
            "outage_first_down_after_s": detection,
        }

    async def _check_notifications(
        self, since: float, outages: dict[str, tuple[float, float]], region_events: set[str]
    ) -> dict[str, Any]:
        got = [d for d in self.observer.deliveries if d["at"] > since]
        by_event = Counter(d["event_id"] for d in self.observer.deliveries)
        twice = {e: n for e, n in by_event.items() if n > 1}
        assert not twice, f"notifications delivered more than once (event id: times): {twice}"
        steady = set(self.steady)
        # A region the scenario took away is really unavailable: its notices are true.
        false = [
            d
            for d in got
            if d["monitor_id"] in steady and not (region_events and d["event"] == "region.unavailable")
        ]
        assert not false, f"notifications about monitors whose target was up: {false[:5]}"
        for name in outages:
            mid = self.flips[name]
            kinds = Counter(
                d["event"] for d in got if d["monitor_id"] == mid and not d["event"].startswith("region.")
            )
            # The outage's diagnosis, the opening's update: once, or not at all when the
            # regions' diagnoses did not come back (a probe killed by the scenario).
            if kinds["incident.diagnosed"] == 1:
                del kinds["incident.diagnosed"]
            want = {"monitor.down": 1, "incident.opened": 1, "monitor.up": 1, "incident.resolved": 1}
            assert dict(kinds) == want, f"{name}: notifications {dict(kinds)}, want one of each"
        return {"notifications": len(got)}

    async def _check_api(self, since: float) -> dict[str, Any]:
        samples = [s for s in self.observer.samples if s.at > since and s.alive]
        assert samples, "the poller recorded no answer"
        wrong = [s for s in samples if s.status not in (200, 503)]
        assert not wrong, f"answers other than 200/503 from live controllers: {wrong[:5]}"
        worst = max(s.latency for s in samples)
        slow = sorted((s for s in samples if s.latency > API_BOUND), key=lambda s: -s.latency)
        shown = [
            (s.controller, s.path, s.status, round(s.latency, 2), round(s.at - since, 1)) for s in slow[:5]
        ]
        assert not slow, (
            f"{len(slow)} answers slower than {API_BOUND} s ((controller, path, status, seconds,"
            f" seconds after the scenario began)): {shown}"
        )
        return {
            "api_answers": len(samples),
            "api_503": sum(s.status == 503 for s in samples),
            "api_max_latency_s": round(worst, 3),
        }


def _rel(rounds: list[asyncpg.Record], since: float) -> list[tuple[int, float]]:
    """(monitor id, due in seconds after the scenario began) of the first rounds."""
    return [(r["monitor_id"], round(r["due"].timestamp() - since, 2)) for r in rounds[:10]]


def _report(figures: dict[str, Any]) -> None:
    """One JSON line per scenario on stdout (`-s`), and in PROBEFLEET_CHAOS_REPORT if set."""
    line = json.dumps(figures, default=str)
    print(f"chaos {line}")
    if path := os.environ.get("PROBEFLEET_CHAOS_REPORT"):
        with open(path, "a") as f:
            f.write(line + "\n")


async def wait(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    await eventually(predicate, timeout=within, interval=0.2, what=what)
