"""Every aiohttp AppKey of the controller."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from probefleet.controller.api.keycache import KeyCache
from probefleet.controller.cluster.fleet import Fleet
from probefleet.controller.cluster.regions import Regions
from probefleet.controller.config import ControllerConfig
from probefleet.controller.engine.heartbeats import PingWriter
from probefleet.controller.engine.scheduler import Scheduler
from probefleet.controller.notifications.dispatcher import Dispatcher
from probefleet.controller.notifications.realtime import Hub
from probefleet.controller.status_pages.cache import PageCache
from probefleet.controller.storage.db import DatabaseProbe

if TYPE_CHECKING:
    # cryptography and nkeys (about 9 MiB): loaded only by a controller given fleet_trust_dir.
    from probefleet.controller.cluster.trust import FleetTrust

CONFIG = web.AppKey("config", ControllerConfig)
POOL = web.AppKey("pool", asyncpg.Pool)
DATABASE = web.AppKey("database_probe", DatabaseProbe)
NC = web.AppKey("nats", NATS)
JS = web.AppKey("jetstream", JetStreamContext)
FLEET = web.AppKey("fleet", Fleet)
# The fleet's NATS trust; None when NATS runs without the fleet's auth (most tests).
TRUST: web.AppKey[FleetTrust | None] = web.AppKey("trust")
REGIONS = web.AppKey("regions", Regions)
SCHEDULER = web.AppKey("scheduler", Scheduler)
STOP = web.AppKey("stop", asyncio.Event)
TASKS = web.AppKey("tasks", list[asyncio.Task[None]])
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
PINGS = web.AppKey("pings", PingWriter)
HUB = web.AppKey("realtime_hub", Hub)
STATUS_PAGES = web.AppKey("status_pages", PageCache)
KEYCACHE = web.AppKey("api_key_cache", KeyCache)
API_KEY = web.RequestKey("api_key", dict)
