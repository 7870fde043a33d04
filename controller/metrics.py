"""Every prometheus_client object of the controller, in one registry."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from probefleet.shared.version import VERSION, commit

# `*_created` samples (one per counter and histogram child) are noise to a Prometheus user;
# the switch is process-wide (the probe's metrics module turns it off too).
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
# process_*, python_info and python_gc_*, which only prometheus_client's default registry has.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

BUILD_INFO = Gauge(
    "probefleet_build_info",
    "The controller's version and build commit (always 1).",
    ["version", "commit"],
    registry=REGISTRY,
)
BUILD_INFO.labels(VERSION, commit()).set(1)

JOBS_PUBLISHED = Counter(
    "probefleet_jobs_published_total",
    "Check jobs published to probes.",
    ["region"],
    registry=REGISTRY,
)
SCHEDULE_LAG = Histogram(
    "probefleet_schedule_lag_seconds",
    "Delay between a round's due time and its publication.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
RESULTS_STORED = Counter("probefleet_results_stored_total", "Probe results stored.", registry=REGISTRY)
RESULT_LAG = Histogram(
    "probefleet_result_lag_seconds",
    "From the end of a check on its probe to its result stored (publish, JetStream, batching);"
    " probe and controller clocks must agree.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
RESULTS_RECEIVED = Counter(
    "probefleet_results_received_total",
    "Probe results received and stored, by region (compare with probefleet_jobs_published_total).",
    ["region"],
    registry=REGISTRY,
)
RESULT_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
RESULT_DELAY = Histogram(
    "probefleet_result_delay_seconds",
    "From a round's due time to the region's result stored: waiting for a free probe, the check"
    " itself and the way back. Grows when a region's probes cannot keep up.",
    ["region"],
    buckets=RESULT_DELAY_BUCKETS,
    registry=REGISTRY,
)
RESULTS_DUPLICATE = Counter(
    "probefleet_results_duplicate_total",
    "Redelivered results dropped as duplicates.",
    registry=REGISTRY,
)
# NATS lets a probe publish only on its own region's subjects; a message whose body names
# another region is a probe that lies (or a bug), and is dropped rather than believed.
REGION_MISMATCH = Counter(
    "probefleet_region_mismatch_total",
    "Probe messages dropped because the region they name is not their subject's (kind: heartbeat, result).",
    ["kind"],
    registry=REGISTRY,
)
VERDICTS = Counter("probefleet_verdicts_total", "Round verdicts by state.", ["state"], registry=REGISTRY)
MONITORS = Gauge(
    "probefleet_monitors_scheduled", "Monitors in this controller's schedule.", registry=REGISTRY
)
PROBES_LIVE = Gauge(
    "probefleet_probes_live",
    "Probes seen within their heartbeat window.",
    ["region"],
    registry=REGISTRY,
)
PROBES_CAPACITY = Gauge(
    "probefleet_probes_capacity",
    "Checks the region's live probes can run at once (their summed concurrency).",
    ["region"],
    registry=REGISTRY,
)
PROBES_IN_FLIGHT = Gauge(
    "probefleet_probes_in_flight",
    "Checks running on the region's live probes, as their last heartbeats said.",
    ["region"],
    registry=REGISTRY,
)
PROBES_OUTDATED = Gauge(
    "probefleet_probes_outdated",
    "Live probes older than the previous minor version of this controller.",
    ["region"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "probefleet_http_requests_total",
    "API requests.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "probefleet_http_request_duration_seconds",
    "API request latency.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "probefleet_notifications_total",
    "Notification attempts by channel kind and outcome.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
REALTIME_CLIENTS = Gauge(
    "probefleet_realtime_clients", "Connected WebSocket and SSE clients.", ["kind"], registry=REGISTRY
)
REALTIME_EVENTS = Counter(
    "probefleet_realtime_events_total", "Outbox events read by the real-time hub.", registry=REGISTRY
)
REALTIME_DROPPED = Counter(
    "probefleet_realtime_dropped_clients_total",
    "Clients disconnected because their queue filled.",
    ["kind"],
    registry=REGISTRY,
)
STATUS_NOTICES = Counter(
    "probefleet_status_page_notices_total",
    "Status-page subscriber messages by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
HEARTBEAT_PINGS = Counter(
    "probefleet_heartbeat_pings_total",
    "Heartbeat pings stored, by signal kind.",
    ["kind"],
    registry=REGISTRY,
)
HEARTBEAT_PINGS_REJECTED = Counter(
    "probefleet_heartbeat_pings_rejected_total",
    "Heartbeat pings refused: unknown_token, too_large, bad_signal, bad_rid, unavailable.",
    ["reason"],
    registry=REGISTRY,
)
HEARTBEAT_BATCH_SIZE = Histogram(
    "probefleet_heartbeat_ping_batch_size",
    "Pings per group-commit batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000),
    registry=REGISTRY,
)
HEARTBEAT_WRITE_SECONDS = Histogram(
    "probefleet_heartbeat_ping_write_seconds",
    "Time to store one batch of pings (one transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
PARTITIONS_DROPPED = Counter(
    "probefleet_retention_partitions_dropped_total",
    "Partitions dropped by retention, by parent table (heartbeat_pings: a day of pings).",
    ["table"],
    registry=REGISTRY,
)
DIAGNOSTICS = Counter(
    "probefleet_diagnostics_total",
    "Diagnose jobs for monitors that went down, by outcome: sent, no_probe (the region has no"
    " live probe that can run them), rate_limited (diagnostics_per_region_minute).",
    ["outcome"],
    registry=REGISTRY,
)
DISPATCHER_WAKEUPS = Counter(
    "probefleet_dispatcher_wakeups_total",
    "Dispatcher steps started by an events NOTIFY.",
    registry=REGISTRY,
)
DATABASE_AVAILABLE = Gauge(
    "probefleet_database_available",
    "1 while the database answers the controller's probe (one query a second), else 0.",
    registry=REGISTRY,
)
DATABASE_FAILURES = Counter(
    "probefleet_database_failures_total",
    "Database calls of background loops that failed for want of the database (timeouts, lost"
    " connections), by loop; each is retried with backoff.",
    ["loop"],
    registry=REGISTRY,
)
ROUNDS_BUFFERED = Gauge(
    "probefleet_rounds_buffered",
    "Rounds whose jobs were published but whose rows are not written yet (database unavailable).",
    registry=REGISTRY,
)
ROUNDS_DROPPED = Counter(
    "probefleet_rounds_dropped_total",
    "Round rows dropped unwritten because the buffer was full during a long database outage.",
    registry=REGISTRY,
)
SCHEDULE_LEASE_EXPIRED = Gauge(
    "probefleet_schedule_lease_expired",
    "1 while this controller schedules its shards past its lease because it cannot renew it.",
    registry=REGISTRY,
)
HEARTBEAT_DEADLINES_EXCUSED = Counter(
    "probefleet_heartbeat_deadlines_excused_total",
    "Late heartbeats given more time because the database was unavailable in their grace window.",
    registry=REGISTRY,
)
TASK_RESTARTS = Counter(
    "probefleet_background_task_restarts_total",
    "Background loops restarted after an unexpected error, by task.",
    ["task"],
    registry=REGISTRY,
)

# ---------------------------------------------------------------- fleet state (state_metrics.py)
# Read from the database every state_metrics_interval by each controller: the whole fleet's
# numbers, the same on every controller (aggregate with max, not sum).
MONITORS_BY_STATUS = Gauge(
    "probefleet_monitors",
    "Monitors by kind and status (up, down, degraded, pending, paused, ...), whole fleet.",
    ["kind", "status"],
    registry=REGISTRY,
)
INCIDENTS_OPEN = Gauge(
    "probefleet_incidents_open",
    "Incidents not resolved (active or acknowledged), by severity, whole fleet.",
    ["severity"],
    registry=REGISTRY,
)
HEARTBEATS_OVERDUE = Gauge(
    "probefleet_heartbeats_overdue",
    "Heartbeat monitors past their deadline that the deadline checker has not turned down yet.",
    registry=REGISTRY,
)
DELIVERIES_QUEUED = Gauge(
    "probefleet_notification_deliveries_queued",
    "Notification deliveries not finished, by channel kind and status (pending, sending, failed:"
    " waiting for a retry).",
    ["kind", "status"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "probefleet_outbox_events_pending",
    "Events in the outbox the dispatcher has not fanned out to deliveries yet.",
    registry=REGISTRY,
)
OUTBOX_LAG = Gauge(
    "probefleet_outbox_lag_seconds",
    "Age of the oldest event not fanned out yet (0 when none).",
    registry=REGISTRY,
)
STATE_REFRESHED = Gauge(
    "probefleet_state_metrics_timestamp_seconds",
    "Unix time the fleet-state gauges above were last read from the database.",
    registry=REGISTRY,
)
