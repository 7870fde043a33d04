"""Every NATS subject, stream and queue-group name is built here and nowhere else."""

from __future__ import annotations

import re

PREFIX = "probefleet"
RESULTS_STREAM = "PROBEFLEET_RESULTS"
RESULTS_CONSUMER = "controller"
PINGS_STREAM = "PROBEFLEET_PINGS"
PINGS_CONSUMER = "controller"

_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def valid_region(region: str) -> bool:
    """Regions are subject tokens: lower-case letters, digits and dashes."""
    return bool(_REGION_RE.match(region))


def jobs(region: str) -> str:
    """Core subject a region's probes take check jobs from."""
    return f"{PREFIX}.jobs.{region}"


def jobs_kind(region: str, kind: str) -> str:
    """Core subject for a region's jobs of one kind that not all its probes can run (a
    mixed region): only the probes able to run `kind` subscribe to it, in the same queue
    group name as the region subject (`jobs_queue`)."""
    return f"{PREFIX}.jobs.{region}.{kind}"


def jobs_kinds(region: str) -> str:
    """Every kind subject of a region (a probe credential's permission)."""
    return f"{PREFIX}.jobs.{region}.*"


def jobs_queue(region: str) -> str:
    """Queue group: each job runs on exactly one probe of its region."""
    return f"probes-{region}"


def results(region: str) -> str:
    return f"{PREFIX}.results.{region}"


def results_all() -> str:
    return f"{PREFIX}.results.>"


def heartbeat(region: str) -> str:
    return f"{PREFIX}.probes.heartbeat.{region}"


def heartbeat_all() -> str:
    return f"{PREFIX}.probes.heartbeat.*"


def pings() -> str:
    """JetStream subject for heartbeat-monitor pings received by any controller."""
    return f"{PREFIX}.pings"


def monitor_changes() -> str:
    """Core subject controllers use to tell each other a monitor changed."""
    return f"{PREFIX}.monitors.changed"


def api_key_revoked() -> str:
    """Core subject: a key was revoked (payload: its prefix); every controller drops it
    from its key cache and answers the reply subject."""
    return f"{PREFIX}.api_keys.revoked"


def status_page_changed() -> str:
    """Core subject: a status page's settings changed or it was deleted (payload: its id);
    every controller ends that page's SSE streams, drops its cached renderings and answers
    the reply subject."""
    return f"{PREFIX}.status_pages.changed"


def controller_members() -> str:
    """Core subject: after each lease renewal a controller publishes the live controllers
    it read; one that is not among them stops scheduling (controller/cluster/sharding.py)."""
    return f"{PREFIX}.controllers.members"


def regions_changed() -> str:
    """Core subject: a region was created, changed or deleted; every controller reloads its
    copy of the regions table."""
    return f"{PREFIX}.regions.changed"
