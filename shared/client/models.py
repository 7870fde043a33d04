"""The API's response types: what every endpoint of /api/v1 answers, as msgspec structs.

The controller's OpenAPI document is generated from these (controller/api/openapi.py),
and the client decodes answers into them, so the document, the server and the client
share one definition. Fields may be added within /api/v1 (docs/api.md, Versioning);
decoding ignores fields it does not know.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any]


class Error(msgspec.Struct, kw_only=True):
    """Every error: `details` names each bad field with what is wrong with it."""

    error: ErrorBody


class Meta(msgspec.Struct, kw_only=True):
    """Beside `data`: the server time, and for lists the cursor of the next page
    (`next_cursor`, null on the last page) or the page counts."""

    timestamp: dt.datetime
    count: int | None = None
    has_more: bool | None = None
    next_cursor: str | None = None
    next_offset: int | None = None


class Monitor(msgspec.Struct, kw_only=True):
    """A monitor: id, the common config, its kind's fields (url, method, host, port, ...
    as in the request), then its state. Uptimes are percentages, null without data."""

    id: int
    name: str
    type: str
    timeout: float
    check_interval: int
    locations: list[str]
    consensus: str
    quorum: int | None
    retry_count: int
    recovery_count: int
    is_enabled: bool
    tags: list[str]
    parent_id: int | None
    incident_on_degraded: bool
    project: str | None
    status: str
    is_ok: bool
    uptime_24h: float | None
    uptime_7d: float | None
    uptime_30d: float | None
    response_time: float | None
    last_check: dt.datetime | None
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    status_changed_at: dt.datetime | None
    # Nagios-style flap detection: flapping until the percent state change over the last
    # 21 rounds falls below 25 %; flap_percent is the percent that started it (null when
    # not flapping).
    flapping: bool = False
    flap_percent: float | None = None
    paused_reason: str | None
    paused_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    notifications: list[int | str] = []
    escalation_policy: int | str | None = None
    # The kind's own fields (null for other kinds): http
    url: str | None = None
    method: str | None = None
    headers: dict[str, str] | None = None
    body: str | None = None
    body_kind: str | None = None
    basic_auth: list[str] | None = None
    bearer_token: str | None = None
    expected_status: list[int | str] | None = None
    follow_redirects: bool | None = None
    max_redirects: int | None = None
    verify_tls: bool | None = None
    ca_pem: str | None = None
    expected_content: str | None = None
    excluded_content: str | None = None
    content_regex: bool | None = None
    json_assertions: list[dict[str, Any]] | None = None
    degraded_ms: float | None = None
    graphql_query: str | None = None
    graphql_variables: dict[str, Any] | None = None
    secret_headers: list[str] | None = None
    secret_params: list[str] | None = None
    # tcp, udp, icmp, tls
    host: str | None = None
    port: int | None = None
    tls: bool | None = None
    send: str | None = None
    expect: str | None = None
    expect_regex: bool | None = None
    count: int | None = None
    ping_interval: float | None = None
    max_packet_loss: float | None = None
    # dns
    domain: str | None = None
    record_type: str | None = None
    resolver: str | None = None
    expected_values: list[str] | None = None
    match: str | None = None
    expected_rcode: str | None = None
    # tls
    server_name: str | None = None
    warn_days: int | None = None
    verify_chain: bool | None = None
    verify_hostname: bool | None = None
    expected_issuer: str | None = None
    min_version: str | None = None
    # heartbeat
    run_interval: int | None = None
    grace_period: int | None = None
    cron: str | None = None
    tz: str | None = None


class RegionCheck(msgspec.Struct, kw_only=True):
    region: str
    status: str  # ok | degraded | fail | skipped | unavailable | no_answer
    is_ok: bool | None
    reason: str | None
    error: str | None
    response_time: float | None
    status_code: int | None
    probe_id: str | None
    checked_at: str | None


class CheckRun(msgspec.Struct, kw_only=True):
    monitor_id: int
    status: str  # the consensus verdict: up | down | degraded | unknown
    is_ok: bool
    response_time: float | None
    status_code: int | None
    checked_at: str
    error: str | None
    reason: str | None
    attempt: int
    regions: list[RegionCheck]


class LogEntry(msgspec.Struct, kw_only=True):
    checked_at: dt.datetime
    due: dt.datetime
    region: str
    attempt: int
    on_demand: bool
    diagnostic: bool = False
    probe_id: str | None
    status: str
    is_ok: bool
    reason: str | None
    error: str | None
    response_time: float
    status_code: int | None
    timings: Any = None


class HistoryEntry(msgspec.Struct, kw_only=True):
    due: dt.datetime
    attempt: int
    status: str  # the round's verdict, or open
    is_ok: bool | None
    regions: list[str]
    answered: list[str]
    closed_at: dt.datetime | None
    results: list[LogEntry]


class BulkResult(msgspec.Struct, kw_only=True):
    action: str
    monitor_ids: list[int]
    count: int
    monitors: list[Monitor]


class Pagination(msgspec.Struct, kw_only=True):
    page: int
    limit: int
    total: int
    pages: int
    has_next: bool
    has_previous: bool


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded"]
    timestamp: dt.datetime


class HealthDetails(msgspec.Struct, kw_only=True):
    status: str
    version: str
    server_time: dt.datetime
    controller_id: str
    database: dict[str, Any]
    nats: dict[str, Any]
    scheduler: dict[str, Any]
    regions: list[dict[str, Any]]


class Incident(msgspec.Struct, kw_only=True):
    """An incident; `duration` and `mttr` in seconds (`mttr` once resolved)."""

    id: int
    monitor_id: int | None
    monitor_name: str | None
    title: str
    status: Literal["active", "acknowledged", "resolved"]
    is_resolved: bool
    severity: str
    started_at: dt.datetime
    acknowledged_at: dt.datetime | None
    resolved_at: dt.datetime | None
    duration: float
    mttr: float | None
    root_cause: str | None
    root_cause_category: str | None
    affected_regions: list[str]
    checks_failed: int | None
    checks_total: int | None
    assignee: str | None
    notes: str | None
    external_ticket_id: str | None
    manual: bool
    suppressed: bool
    cause_monitor_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


class FailedResult(msgspec.Struct, kw_only=True):
    """One failed check result of an incident: where, at which step, and its evidence."""

    due: dt.datetime
    attempt: int
    region: str
    probe_id: str
    reason: str | None
    phase: Literal["dns", "connect", "tls", "response", "content", "timeout", "other"]
    message: str
    status_code: int | None
    duration_ms: float
    timings: dict[str, float]
    evidence: dict[str, Any] | None


class PhaseMatrix(msgspec.Struct, kw_only=True):
    """Failed results per region and phase; `phases` in the order a request meets them."""

    phases: list[str]
    regions: dict[str, dict[str, int]]


class Diagnostic(msgspec.Struct, kw_only=True):
    """What a region that saw the monitor fail found when it went down: the traceroute's
    hops, the DNS answer and the resolver that gave it, the TLS chain (for TLS targets)."""

    region: str
    probe_id: str
    status: str
    due: dt.datetime
    ran_at: dt.datetime
    duration_ms: float
    summary: str
    target: str | None = None
    port: int | None = None
    traceroute: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None


class IncidentDetail(Incident, kw_only=True):
    """One incident and why: the region x phase matrix of its failed results, the first
    failed result with its evidence, the failing regions' diagnostics, and the timeline."""

    matrix: PhaseMatrix
    first_failure: FailedResult | None
    diagnostics: list[Diagnostic] = []
    timeline: list[TimelineEntry]


class TimelineEntry(msgspec.Struct, kw_only=True):
    id: int
    at: dt.datetime
    kind: str
    message: str
    data: Any = None


class EventBrief(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    occurred_at: dt.datetime


class IncidentTimeline(msgspec.Struct, kw_only=True):
    entries: list[TimelineEntry]
    events: list[EventBrief]


class Event(msgspec.Struct, kw_only=True):
    """A state change (monitor.down, incident.resolved, ...); `payload` depends on `kind`.
    The downtime (incident) it belongs to: `started_at`, `ended_at` and `duration_seconds`
    once it ended, `resolved`; None for an event of no incident."""

    id: int
    kind: str
    monitor_id: int | None
    incident_id: int | None
    occurred_at: dt.datetime
    payload: dict[str, Any]
    resolved: bool | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration_seconds: int | None = None


class WindowMetrics(msgspec.Struct, kw_only=True):
    """The last 24 hours: percentiles of response times (ms), uptime in percent
    (`uptime_pct` is `uptime_24h` again, under the name dashboards read)."""

    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    uptime_24h: float | None
    uptime_pct: float | None
    rounds_24h: int
    successful_checks_24h: int


class MonitorStatus(msgspec.Struct, kw_only=True):
    """A monitor's state now (`state` is `status` again, under the name dashboards read)
    and its metrics of the last 24 hours."""

    monitor_id: int
    name: str
    status: str
    state: str
    is_ok: bool
    status_changed_at: dt.datetime | None
    last_check: dt.datetime | None
    response_time_ms: float | None
    unavailable_regions: list[str]
    open_incident_id: int | None
    regions: list[dict[str, Any]]
    metrics: WindowMetrics


class MaintenanceWindow(msgspec.Struct, kw_only=True):
    id: int
    name: str
    monitor_ids: list[int]
    tags: list[str]
    recurring: bool
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    days: list[str]
    start_time: str | None
    duration: int | None
    time_zone: str
    enabled: bool
    active_now: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class Heartbeat(msgspec.Struct, kw_only=True):
    """A heartbeat monitor. `token` and `ping_url` only when created or rotated."""

    id: int
    name: str
    type: Literal["heartbeat"]
    run_interval: int | None
    grace_period: int
    cron: str | None
    tz: str
    is_enabled: bool
    tags: list[str]
    status: str
    is_ok: bool
    last_ping_at: dt.datetime | None
    last_ping_kind: str | None
    last_success: dt.datetime | None
    last_failure: dt.datetime | None
    next_deadline: dt.datetime | None
    deadline_reason: str | None
    open_runs: int
    token_hint: str | None
    status_changed_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    token: str | None = None
    ping_url: str | None = None


class Ping(msgspec.Struct, kw_only=True):
    id: int
    at: dt.datetime
    kind: str
    exit_code: int | None
    rid: str | None
    duration_ms: float | None
    source: str | None
    user_agent: str | None
    method: str | None
    body: str | None


class PingReceived(msgspec.Struct, kw_only=True):
    success: bool
    kind: Literal["success", "start", "fail", "log"]
    exit_code: int | None
    rid: str | None


class Channel(msgspec.Struct, kw_only=True):
    """A notification channel; secrets in `config` read `<redacted>`."""

    id: int
    name: str
    kind: str
    type: str
    config: dict[str, Any]
    is_enabled: bool
    disabled_reason: str | None
    disabled_at: dt.datetime | None
    reminder_minutes: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


class ChannelTest(msgspec.Struct, kw_only=True):
    delivery_id: int
    delivered: bool
    status: Literal["delivered", "dead"]
    error: str | None
    permanent: bool | None


class Delivery(msgspec.Struct, kw_only=True):
    id: int
    event_id: int | None
    channel_id: int
    kind: str
    seq: int
    monitor_id: int | None
    incident_id: int | None
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    delivered_at: dt.datetime | None


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    """One attempt to send one delivery (the delivery log)."""

    id: int
    delivery_id: int
    attempt: int
    channel_id: int | None
    subscriber_id: int | None
    event_id: int | None
    event_kind: str | None
    monitor_id: int | None
    incident_id: int | None
    outcome: Literal["delivered", "failed", "dead", "cancelled"]
    status_code: int | None
    error: str | None
    duration_ms: float | None
    attempted_at: dt.datetime


class Rule(msgspec.Struct, kw_only=True):
    id: int
    name: str
    min_severity: str | None
    reminder_minutes: int | None
    escalate_after_minutes: int | None
    is_enabled: bool
    is_policy: bool
    events: list[str]
    monitor_ids: list[int]
    tags: list[str]
    channel_ids: list[int]
    escalation_channel_ids: list[int]
    group_by: list[Literal["parent", "tag", "host", "region"]]
    group_window_s: int
    created_at: dt.datetime
    updated_at: dt.datetime


class Subscription(msgspec.Struct, kw_only=True):
    """The self-hosted plan: always active, never billed, no limits."""

    plan: str
    status: str
    billing: None
    cancel_at_period_end: bool
    current_period_end: None
    limits: dict[str, None]
    usage: dict[str, int]


class StatusPageComponent(msgspec.Struct, kw_only=True):
    monitor_id: int
    display_name: str | None
    component_id: int


class StatusPageSectionOut(msgspec.Struct, kw_only=True):
    name: str
    monitors: list[StatusPageComponent]


class StatusPage(msgspec.Struct, kw_only=True):
    id: int
    name: str
    slug: str
    custom_domain: str | None
    description: str
    is_public: bool
    has_password: bool
    incident_status: str | None
    incident_message: str | None
    incident_updated_at: dt.datetime | None
    sections: list[StatusPageSectionOut]
    monitor_count: int = 0  # components on the page, in every section
    logo_url: str | None = None
    colors: dict[str, str] | None = None
    custom_css: str = ""
    footer_text: str = ""
    theme: str = "auto"
    show_response_times: bool = False
    url: str
    created_at: dt.datetime
    updated_at: dt.datetime


class PostUpdate(msgspec.Struct, kw_only=True):
    id: int
    status: str
    message: str
    created_at: dt.datetime


class Post(msgspec.Struct, kw_only=True):
    id: int
    title: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    resolved_at: dt.datetime | None
    updates: list[PostUpdate]


class Subscriber(msgspec.Struct, kw_only=True):
    id: int
    kind: Literal["email", "webhook"]
    address: str
    confirmed_at: dt.datetime | None
    created_at: dt.datetime
    # The components whose state changes it is told about; null: all of them.
    component_ids: list[int] | None = None
    confirmed: bool


class Subscribed(msgspec.Struct, kw_only=True):
    kind: Literal["email", "webhook"]
    confirmed: bool


class PublicPage(msgspec.Struct, kw_only=True):
    """What a visitor of the page sees, as JSON."""

    name: str
    slug: str
    description: str
    status: str
    incident: dict[str, Any] | None
    sections: list[dict[str, Any]]
    posts: list[dict[str, Any]]
    maintenance: list[dict[str, Any]]
    updated_at: str


class Checks(msgspec.Struct, kw_only=True):
    total: int
    successful: int
    failed: int
    degraded: int


class ResponseTimes(msgspec.Struct, kw_only=True):
    """Milliseconds, to 0.01 ms; percentiles within `percentile_relative_error`."""

    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class Rounds(msgspec.Struct, kw_only=True):
    up: int
    degraded: int
    down: int
    unknown: int
    excluded: int


class IncidentSummary(msgspec.Struct, kw_only=True):
    count: int
    total_downtime: float
    mttr: float | None


class RegionStats(msgspec.Struct, kw_only=True):
    region: str
    uptime: float | None
    checks: Checks
    response_times: ResponseTimes


class StatsReport(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """Uptime (percent of decided rounds that were up), checks, response times and
    incidents over [from, to), with a time series at `granularity`."""

    monitor_id: int
    from_: dt.datetime
    to: dt.datetime
    uptime_percentage: float | None
    checks: Checks
    response_times: ResponseTimes
    percentile_relative_error: float
    rounds: Rounds
    incidents: IncidentSummary
    regions: list[RegionStats]
    granularity: str
    series: list[dict[str, Any]]


class MonitorStats(StatsReport, kw_only=True):
    """The report over `period`, with uptime over the fixed windows too."""

    period: str
    uptime: dict[str, float | None]


class SlaRow(msgspec.Struct, kw_only=True):
    monitor_id: int
    name: str
    uptime: float | None
    downtime_s: float
    incidents: int
    mttr_s: float | None
    mtbf_s: float | None
    rounds_up: int
    rounds_degraded: int
    rounds_down: int
    rounds_unknown: int
    rounds_excluded: int


class SlaReport(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    from_: dt.datetime
    to: dt.datetime
    monitors: list[SlaRow]


# ---- API keys and regions


class ApiKey(msgspec.Struct, kw_only=True):
    """A key as listed: never the secret or its hash."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    rate_limit: int | None = None


class ApiKeyCreated(ApiKey, kw_only=True):
    key: str  # the full key, shown only in the create response


class Region(msgspec.Struct, kw_only=True):
    """A region with what this controller sees of it now: live probes (heartbeats within
    the fleet's window), their capacity (sum of concurrency) and use (checks in flight),
    their versions (version -> probes) and how many of those are `outdated` (older than the
    previous minor version of this controller), enrolled probes (unrevoked credentials),
    the jobs this controller published to the region and the region's results it stored
    since it started, and the 99th percentile of those results' delay (from the round's
    due time to stored) over the last 5 minutes (None without a result in them)."""

    name: str
    display_name: str
    city: str
    country: str
    country_code: str
    latitude: float | None
    longitude: float | None
    provider: str
    created_at: dt.datetime
    updated_at: dt.datetime
    live_probes: int
    capacity: int
    in_flight: int
    versions: dict[str, int]
    outdated_probes: int
    enrolled_probes: int
    jobs_published: int
    results_received: int
    result_delay_p99_seconds: float | None


class RegionProbe(msgspec.Struct, kw_only=True):
    """A probe of the region: live ones (heartbeats) and enrolled ones that are not
    connected now. `credential`: active, revoked, or none (a probe that joined without
    enrolling, over a NATS without the fleet's auth). `outdated`: its version is older than
    the previous minor version of this controller (an upgrade is due)."""

    probe_id: str
    live: bool
    host: str | None
    version: str | None
    outdated: bool
    capabilities: list[str] | None
    connected_since: dt.datetime | None
    last_heartbeat: dt.datetime | None
    in_flight: int | None
    concurrency: int | None
    source_address: str | None
    credential: Literal["active", "revoked", "none"]
    enrolled_at: dt.datetime | None


class WorkerRegion(msgspec.Struct, kw_only=True):
    id: str
    city: str
    country: str
    country_code: str
    latitude: float | None
    longitude: float | None
    is_active: bool  # at least one live probe (heartbeats within the fleet's window)
    probe_count: int
