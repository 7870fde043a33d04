"""Messages that cross NATS between controller and probes, encoded with msgpack.

The job's spec is a tagged union: the tag is the monitor kind, which is also the
checker's module name and registry key. Every field has a default so old and new
processes can talk to each other while a fleet is upgraded.
"""

from __future__ import annotations

import enum
import hashlib
import shlex
from collections.abc import Sequence
from typing import Literal

import msgspec

# ---------------------------------------------------------------- check specs


class Assertion(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A JSON-path assertion on an HTTP response body."""

    path: str
    op: Literal["equals", "not_equals", "lt", "lte", "gt", "gte", "contains", "exists"] = "equals"
    value: str | int | float | bool | None = None


class HttpSpec(msgspec.Struct, tag="http", kw_only=True, omit_defaults=True):
    url: str
    method: str = "GET"
    headers: dict[str, str] = {}
    body: str | None = None
    body_kind: Literal["raw", "json", "form"] = "raw"
    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    expected_status: list[int | str] = msgspec.field(default_factory=lambda: ["2xx", "3xx"])
    follow_redirects: bool = True
    max_redirects: int = 10
    verify_tls: bool = True
    ca_pem: str | None = None
    expected_content: str | None = None
    excluded_content: str | None = None
    content_regex: bool = False
    json_assertions: list[Assertion] = []
    degraded_ms: float | None = None
    graphql_query: str | None = None
    graphql_variables: dict[str, object] | None = None
    # Header and query parameter names whose values the API shows as `<redacted>`, beside
    # the names shared/redact.py treats as secret anyway; probes ignore them.
    secret_headers: list[str] = []
    secret_params: list[str] = []
    # Evidence on a failed result: keep the first 64 KiB of the response body (status line
    # and headers are always kept). `sensitive` monitors never keep a body.
    evidence_body: bool = True
    sensitive: bool = False


class TcpSpec(msgspec.Struct, tag="tcp", kw_only=True, omit_defaults=True):
    host: str
    port: int
    tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    send: str | None = None
    expect: str | None = None
    expect_regex: bool = False
    degraded_ms: float | None = None


class UdpSpec(msgspec.Struct, tag="udp", kw_only=True, omit_defaults=True):
    host: str
    port: int
    send: str = ""
    expect: str | None = None
    expect_regex: bool = False
    degraded_ms: float | None = None


class IcmpSpec(msgspec.Struct, tag="icmp", kw_only=True, omit_defaults=True):
    host: str
    count: int = 3
    interval: float = 0.2
    max_packet_loss: float = 0.0
    degraded_ms: float | None = None


class DnsSpec(msgspec.Struct, tag="dns", kw_only=True, omit_defaults=True):
    name: str
    record_type: Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR"] = "A"
    resolver: str | None = None
    expected_values: list[str] = []
    match: Literal["any", "all"] = "any"
    expected_rcode: str = "NOERROR"
    degraded_ms: float | None = None


class TlsSpec(msgspec.Struct, tag="tls", kw_only=True, omit_defaults=True):
    host: str
    port: int = 443
    server_name: str | None = None
    warn_days: int = 14
    verify_chain: bool = True
    verify_hostname: bool = True
    expected_issuer: str | None = None
    min_version: str | None = None
    ca_pem: str | None = None
    # Speak the protocol's plain-text opening first, then upgrade (ports 25/587, 143, 110).
    starttls: Literal["none", "smtp", "imap", "pop3"] = "none"
    # Ask the OCSP responder the certificate names (if any) whether it is revoked.
    check_ocsp: bool = True


class Extract(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A variable taken from a flow step's response: `source` json (a path such as
    `$.data.id`), regex (the first group, else the whole match), header or cookie (by name)."""

    name: str
    source: Literal["json", "regex", "header", "cookie"] = "json"
    path: str


class FlowStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One request of an api_flow. `{{name}}` in url, header values and body is replaced by
    a variable extracted earlier (or given in the flow's `variables`), `{{secrets.name}}`
    by one of the flow's secrets."""

    name: str = ""
    method: str = "GET"
    url: str
    headers: dict[str, str] = {}
    body: str | None = None
    body_kind: Literal["raw", "json", "form"] = "raw"
    follow_redirects: bool = True
    expected_status: list[int | str] = msgspec.field(default_factory=lambda: ["2xx", "3xx"])
    max_latency_ms: float | None = None
    expected_content: str | None = None
    body_regex: str | None = None
    json_assertions: list[Assertion] = []
    # Response header name -> text its value must contain.
    expected_headers: dict[str, str] = {}
    extract: list[Extract] = []


class ApiFlowSpec(msgspec.Struct, tag="api_flow", kw_only=True, omit_defaults=True):
    """Up to 20 HTTP steps run in order under one deadline; the teardown step always runs,
    the diagnostic request only when a step failed."""

    steps: list[FlowStep]
    teardown: FlowStep | None = None
    diagnostic: FlowStep | None = None
    variables: dict[str, str] = {}
    # Stored with the monitor, sent to probes, shown as `<redacted>` by the API.
    secrets: dict[str, str] = {}
    verify_tls: bool = True
    ca_pem: str | None = None
    degraded_ms: float | None = None
    secret_headers: list[str] = []
    secret_params: list[str] = []


class WebsocketSpec(msgspec.Struct, tag="websocket", kw_only=True, omit_defaults=True):
    """Open a WebSocket (ws:// or wss://), optionally send one text message, and expect a
    message that contains (or matches) `expect`."""

    url: str
    headers: dict[str, str] = {}
    subprotocols: list[str] = []
    send: str | None = None
    expect: str | None = None
    expect_regex: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    degraded_ms: float | None = None
    secret_headers: list[str] = []
    secret_params: list[str] = []


class GrpcSpec(msgspec.Struct, tag="grpc", kw_only=True, omit_defaults=True):
    """The standard grpc.health.v1 Check of `service` ("" asks for the whole server); the
    answer must be `expected_serving_status` (SERVING, or NOT_SERVING for a standby)."""

    host: str
    port: int
    service: str = ""
    expected_serving_status: Literal["SERVING", "NOT_SERVING"] = "SERVING"
    tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    server_name: str | None = None
    metadata: dict[str, str] = {}
    degraded_ms: float | None = None


class SshSpec(msgspec.Struct, tag="ssh", kw_only=True, omit_defaults=True):
    """The server's banner and host key; no login. A key not among `host_key_fingerprints`
    (OpenSSH's `SHA256:...` form) fails with host_key_changed."""

    host: str
    port: int = 22
    host_key_fingerprints: list[str] = []
    expected_banner: str | None = None
    degraded_ms: float | None = None


class PostgresSpec(msgspec.Struct, tag="postgres", kw_only=True, omit_defaults=True):
    """Connect, authenticate, run `query` in a read-only transaction, compare the first
    column of the first row with `expected_value` (as text)."""

    host: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = None
    database: str | None = None
    query: str = "SELECT 1"
    expected_value: str | None = None
    tls: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    ca_pem: str | None = None
    degraded_ms: float | None = None


class MysqlSpec(msgspec.Struct, tag="mysql", kw_only=True, omit_defaults=True):
    """As postgres, for MySQL and MariaDB."""

    host: str
    port: int = 3306
    user: str = "root"
    password: str | None = None
    database: str | None = None
    query: str = "SELECT 1"
    expected_value: str | None = None
    tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    degraded_ms: float | None = None


class RedisSpec(msgspec.Struct, tag="redis", kw_only=True, omit_defaults=True):
    """Connect, AUTH when a password is set, run a read-only command (PING by default) and
    compare its reply (as text) with `expected_value`."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0
    command: str = "PING"
    expected_value: str | None = None
    tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    degraded_ms: float | None = None


# Redis commands that only read; a redis check's command must start with one of them.
REDIS_READ_ONLY = frozenset(
    {
        "PING", "ECHO", "GET", "MGET", "EXISTS", "TYPE", "TTL", "PTTL", "STRLEN", "HGET", "HLEN",
        "HEXISTS", "LLEN", "LINDEX", "SCARD", "SISMEMBER", "ZCARD", "ZSCORE", "DBSIZE", "INFO",
        "TIME", "LASTSAVE", "ROLE", "XLEN",
    }
)  # fmt: skip


def parse_redis_command(text: str) -> list[str]:
    """A redis check's command as words (shell quoting); ValueError when it is empty,
    badly quoted or not read-only."""
    words = shlex.split(text)
    if not words:
        raise ValueError("the command is empty")
    if words[0].upper() not in REDIS_READ_ONLY:
        raise ValueError(
            f"{words[0]} is not one of the read-only commands: {', '.join(sorted(REDIS_READ_ONLY))}"
        )
    return words


class SmtpSpec(msgspec.Struct, tag="smtp", kw_only=True, omit_defaults=True):
    """Banner, EHLO, and STARTTLS (or TLS from the start) with the certificate checked."""

    host: str
    port: int = 25
    tls: Literal["none", "starttls", "implicit"] = "none"
    verify_tls: bool = True
    ca_pem: str | None = None
    expected_banner: str | None = None
    warn_days: int = 14
    degraded_ms: float | None = None


class ImapSpec(msgspec.Struct, tag="imap", kw_only=True, omit_defaults=True):
    """Greeting, CAPABILITY, and STARTTLS (or TLS from the start) with the certificate checked."""

    host: str
    port: int = 143
    tls: Literal["none", "starttls", "implicit"] = "none"
    verify_tls: bool = True
    ca_pem: str | None = None
    expected_banner: str | None = None
    warn_days: int = 14
    degraded_ms: float | None = None


class Pop3Spec(msgspec.Struct, tag="pop3", kw_only=True, omit_defaults=True):
    """Greeting, CAPA, and STLS (or TLS from the start) with the certificate checked."""

    host: str
    port: int = 110
    tls: Literal["none", "starttls", "implicit"] = "none"
    verify_tls: bool = True
    ca_pem: str | None = None
    expected_banner: str | None = None
    warn_days: int = 14
    degraded_ms: float | None = None


class MqttSpec(msgspec.Struct, tag="mqtt", kw_only=True, omit_defaults=True):
    """Connect (and authenticate); with `topic`, subscribe, publish `payload` and wait for
    it to come back."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    topic: str | None = None
    payload: str = "probefleet"
    qos: int = 0
    tls: bool = False
    verify_tls: bool = True
    ca_pem: str | None = None
    degraded_ms: float | None = None


class BrowserStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One declarative step of a browser journey (no code): goto `url`; click or fill
    `selector` (fill types `value`, where `{{secrets.name}}` is one of the check's
    secrets); wait_for_selector; wait_for_text or assert_text `value` (in `selector`, or
    the page); assert_no_console_errors."""

    action: Literal[
        "goto",
        "click",
        "fill",
        "wait_for_selector",
        "wait_for_text",
        "assert_text",
        "assert_no_console_errors",
    ]
    url: str | None = None
    selector: str | None = None
    value: str | None = None


class BrowserSpec(msgspec.Struct, tag="browser", kw_only=True, omit_defaults=True):
    """A journey in headless Chromium under time, memory and CPU caps, with web vitals
    and a screenshot on failure. Only probes that announce `browser` run it."""

    steps: list[BrowserStep]
    secrets: dict[str, str] = {}
    viewport_width: int = 1280
    viewport_height: int = 800
    max_memory_mb: int = 768
    screenshot_on_failure: bool = True
    degraded_ms: float | None = None


class DiagnoseSpec(msgspec.Struct, tag="diagnose", kw_only=True, omit_defaults=True):
    """Not a monitor kind: what the controller asks a region that saw a monitor fail to find
    out when the monitor goes down (controller/engine/diagnostics.py). A traceroute to the
    target, its DNS answer and the resolver used, and for TLS targets the presented chain,
    in parallel within `budget` seconds. The result is ok whenever the diagnosis ran."""

    host: str
    port: int | None = None
    tls: bool = False
    server_name: str | None = None
    # The monitor's URL, for the record (host and port are already taken from it).
    url: str | None = None
    # A DNS server host[:port]; the host's own resolvers when unset.
    resolver: str | None = None
    # The monitor's extra CA, so that its own chain verifies as the check's does.
    ca_pem: str | None = None
    budget: float = 10.0
    max_hops: int = 20
    # Trace with TCP SYNs to `port` (the target speaks TCP: routers that drop UDP or ICMP
    # usually let these through), else with UDP datagrams.
    tcp: bool = False


CheckSpec = (
    HttpSpec
    | TcpSpec
    | UdpSpec
    | IcmpSpec
    | DnsSpec
    | TlsSpec
    | ApiFlowSpec
    | WebsocketSpec
    | GrpcSpec
    | SshSpec
    | PostgresSpec
    | MysqlSpec
    | RedisSpec
    | SmtpSpec
    | ImapSpec
    | Pop3Spec
    | MqttSpec
    | BrowserSpec
    | DiagnoseSpec
)
# Kinds from api_flow on take their settings from a file in `probefleet probe check`.
PROBE_KINDS: tuple[str, ...] = (
    "http",
    "tcp",
    "udp",
    "icmp",
    "dns",
    "tls",
    "diagnose",
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
)

# ---------------------------------------------------------------- jobs and results


class CheckJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One round of one monitor for one region.

    `due` and `deadline` are Unix seconds. A probe must publish a result before
    `deadline`; a job received after it is reported as skipped, not run.
    """

    monitor_id: int
    due: float
    deadline: float
    region: str
    timeout: float
    spec: CheckSpec
    attempt: int = 0
    # For the probe's per-monitor metrics: the monitor's interval (a series unseen for a few
    # intervals is dropped), its name (a label only when the probe is told to add it) and
    # its tags (the probe's series filter). Absent from controllers that predate them.
    interval: float = 0.0
    name: str = ""
    tags: list[str] = []
    # The probe may send this job's result in a batch (`encode_batch`) with others: set only
    # when every live controller decodes batches. Absent (false) from older controllers.
    batch_results: bool = False

    @property
    def job_id(self) -> str:
        return job_id(self.monitor_id, self.due, self.region, self.attempt)


def job_id(monitor_id: int, due: float, region: str, attempt: int) -> str:
    """Stable id of a job; also the JetStream Nats-Msg-Id of its result (dedup)."""
    return f"{monitor_id}:{round(due * 1000)}:{region}:{attempt}"


class Status(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAIL = "fail"
    SKIPPED = "skipped"


class Reason(enum.StrEnum):
    """The closed set of reasons a check is not plainly ok."""

    TIMEOUT = "timeout"
    DNS_ERROR = "dns_error"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    NETWORK_UNREACHABLE = "network_unreachable"
    TLS_ERROR = "tls_error"
    CERT_EXPIRED = "cert_expired"
    CERT_EXPIRING = "cert_expiring"
    CERT_INVALID = "cert_invalid"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    ISSUER_MISMATCH = "issuer_mismatch"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    KEYWORD_MISSING = "keyword_missing"
    KEYWORD_PRESENT = "keyword_present"
    JSON_MISMATCH = "json_mismatch"
    GRAPHQL_ERROR = "graphql_error"
    SLOW_RESPONSE = "slow_response"
    RESPONSE_MISMATCH = "response_mismatch"
    NO_RESPONSE = "no_response"
    PACKET_LOSS = "packet_loss"
    PERMISSION_DENIED = "permission_denied"
    RCODE_MISMATCH = "rcode_mismatch"
    ANSWER_MISMATCH = "answer_mismatch"
    DEADLINE_PASSED = "deadline_passed"
    INVALID_TARGET = "invalid_target"
    PROTOCOL_ERROR = "protocol_error"
    HEADER_MISMATCH = "header_mismatch"
    LATENCY_EXCEEDED = "latency_exceeded"
    EXTRACTION_FAILED = "extraction_failed"
    VARIABLE_MISSING = "variable_missing"
    AUTH_FAILED = "auth_failed"
    HOST_KEY_CHANGED = "host_key_changed"
    QUERY_FAILED = "query_failed"
    VALUE_MISMATCH = "value_mismatch"
    NOT_SERVING = "not_serving"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    CERT_REVOKED = "cert_revoked"
    ELEMENT_MISSING = "element_missing"
    CONSOLE_ERRORS = "console_errors"
    RESOURCE_LIMIT = "resource_limit"
    BROWSER_UNAVAILABLE = "browser_unavailable"
    INTERNAL_ERROR = "internal_error"
    # Written by the controller, not a probe: the region's live probes cannot run the kind.
    NO_CAPABLE_PROBE = "no_capable_probe"
    # A job sent ahead of its due time to a probe that stopped before it fell due.
    PROBE_STOPPED = "probe_stopped"


class CheckResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a probe reports for one job. Times are Unix seconds, durations ms."""

    monitor_id: int
    due: float
    region: str
    attempt: int = 0
    probe_id: str
    status: Status
    reason: Reason | None = None
    message: str = ""
    started_at: float
    duration_ms: float = 0.0
    timings: dict[str, float] = {}
    status_code: int | None = None
    details: dict[str, object] = {}

    @property
    def job_id(self) -> str:
        return job_id(self.monitor_id, self.due, self.region, self.attempt)


class ProbeHeartbeat(msgspec.Struct, kw_only=True, omit_defaults=True):
    probe_id: str
    region: str
    version: str
    concurrency: int
    in_flight: int
    started_at: float
    sent_at: float
    source_address: str | None = None
    checks_total: int = 0
    # The host name the probe runs on, and the check kinds it can run there (sorted).
    # Both empty from probes that predate them.
    host: str = ""
    capabilities: list[str] = []
    # The due time of the oldest job this probe took whose result JetStream has not
    # acknowledged yet (running, queued or being retried); None: it holds none. The sweeper
    # closes no round for missing answers while a live probe may still hold its answer.
    unacked_since: float | None = None
    # The probe takes jobs sent ahead of their due time, several to a message (a msgpack
    # array of CheckJob); absent (false) from probes that predate it, which get one job per
    # message at its due time.
    job_batches: bool = False
    # The kinds this probe also takes on their kind subjects (subjects.jobs_kind), in the
    # region's queue group (sorted): those of its capabilities not every probe has, whose
    # subscription NATS accepted. Empty from probes that predate them and from those whose
    # credential does not allow the subjects (issued before them); the controller sends a
    # kind there only while every live probe of the region able to run it lists it.
    kind_subjects: list[str] = []


# What a controller writes in its lease row (`controllers.wire`): 2 decodes result batches.
# A controller sets `CheckJob.batch_results` only while every live controller is at 2.
WIRE = 2

_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(CheckJob)
_jobs_decoder = msgspec.msgpack.Decoder(CheckJob | list[CheckJob])
_result_decoder = msgspec.msgpack.Decoder(CheckResult)
# msgspec tells the two apart by the msgpack type: a map is one result, an array a batch.
_results_decoder = msgspec.msgpack.Decoder(CheckResult | list[CheckResult])
_heartbeat_decoder = msgspec.msgpack.Decoder(ProbeHeartbeat)


def encode(msg: CheckJob | CheckResult | ProbeHeartbeat) -> bytes:
    return _encoder.encode(msg)


def decode_job(data: bytes) -> CheckJob:
    return _job_decoder.decode(data)


def encode_job_batch(jobs: Sequence[bytes]) -> bytes:
    """Jobs encoded one by one (`encode`) as one message: a msgpack array of them, or the
    job itself when there is one (what a probe without `job_batches` reads too)."""
    n = len(jobs)
    if n == 1:
        return jobs[0]
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(jobs)


def decode_jobs(data: bytes) -> list[CheckJob]:
    """One job message: a single job, or an array of them (`encode_job_batch`)."""
    decoded = _jobs_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def decode_result(data: bytes) -> CheckResult:
    return _result_decoder.decode(data)


def encode_batch(encoded: list[bytes]) -> bytes:
    """A batch of results as one message: the msgpack array of results already encoded
    with `encode` (not encoded again)."""
    return _encoder.encode([msgspec.Raw(e) for e in encoded])


def batch_id(job_ids: list[str]) -> str:
    """The Nats-Msg-Id of a batch of results: the same for the same results in the same
    order (a retried publish is dropped by JetStream's duplicate window), different for any
    other batch. Hashed: a batch of 200 job ids would not fit a header comfortably."""
    digest = hashlib.blake2b("\n".join(job_ids).encode(), digest_size=16).hexdigest()
    return f"batch:{len(job_ids)}:{digest}"


def decode_results(data: bytes) -> list[CheckResult]:
    """The results of one message on a results subject: one result or a batch of them."""
    decoded = _results_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def decode_heartbeat(data: bytes) -> ProbeHeartbeat:
    return _heartbeat_decoder.decode(data)
