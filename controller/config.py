"""Controller configuration: defaults beside fields, env overrides, unknown keys rejected."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from pathlib import Path
from typing import Literal, get_args

import msgspec

from probefleet.shared.config import env_setting, read_file

# EmailConfig.security's values; status_pages/subscribers.from_config passes this on, so mypy
# rejects any other.
SmtpSecurity = Literal["none", "starttls", "tls"]


class Region(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str
    city: str = ""
    country: str = ""
    country_code: str = ""
    latitude: float | None = None
    longitude: float | None = None


DEFAULT_REGIONS: list[Region] = [
    Region(
        id="us-east",
        city="Ashburn",
        country="United States",
        country_code="US",
        latitude=39.04,
        longitude=-77.49,
    ),
    Region(
        id="eu-west", city="Dublin", country="Ireland", country_code="IE", latitude=53.35, longitude=-6.26
    ),
    Region(id="ap-south", city="Mumbai", country="India", country_code="IN", latitude=19.08, longitude=72.88),
]


class ControllerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    database_url: str = "postgresql://postgres@127.0.0.1:5432/probefleet"
    nats_url: str = "nats://127.0.0.1:4222"
    # The fleet's NATS trust (`probefleet controller init-fleet --dir`): signs probe credentials
    # and pushes revocations. With it, nats_credentials and nats_tls_ca default to its
    # controller.creds and ca.pem.
    fleet_trust_dir: str | None = None
    # The NATS URLs probes are given when they enroll (default: nats_url), e.g. the public
    # tls://nats.example.com:4222 while the controller itself uses an internal address.
    fleet_nats_urls: list[str] = msgspec.field(default_factory=list)
    # The controller's own NATS credential (.creds) and the CA of the server's certificate.
    nats_credentials: str | None = None
    nats_tls_ca: str | None = None
    # A client certificate and key, when NATS asks for one (mutual TLS; with
    # fleet_trust_dir they default to its controller-cert.pem and controller-key.pem).
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    # Run on a NATS without authentication: `controller serve` refuses to start with neither a
    # credential nor this, and warns at every start with it.
    nats_insecure: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    controller_id: str = ""
    regions: list[Region] = msgspec.field(default_factory=lambda: list(DEFAULT_REGIONS))
    # A probe is forgotten after this many missed heartbeats.
    probe_heartbeat_interval: float = 2.0
    probe_missed_heartbeats: int = 3
    # Extra time a round waits for results beyond the monitor's timeout.
    round_grace: float = 2.0
    # Seconds before their due time rounds are opened and their jobs sent, several to a
    # message, to regions whose probes all take batches; 0: each job at its due time alone.
    dispatch_lookahead: float = 1.0
    results_batch: int = 500
    # Seconds JetStream waits for a controller to acknowledge a result message before another
    # controller gets it: how long the results a killed controller had fetched wait. A batch
    # being stored is marked in progress three times per ack_wait, so it is not handed over.
    results_ack_wait: float = 30.0
    # After a fetch that found fewer results than it asked for, the results consumer waits
    # this long before the next one, so the next transaction stores what arrived meanwhile
    # (fewer, larger batches at low rates); 0: fetch again at once.
    results_gather: float = 0.05
    # Diagnose jobs (traceroute, DNS, TLS chain) sent to a region per minute when monitors
    # go down there (controller/engine/diagnostics.py); 0 turns them off.
    diagnostics_per_region_minute: int = 10
    # JetStream replicas of the results and pings streams: 1 on a single NATS server, 3 on a
    # three-node cluster (the production topology), so losing one node loses no result.
    nats_stream_replicas: int = 1
    # Schedule ownership: lease renewal period; a silent controller's lease lasts 3 periods.
    controller_heartbeat_interval: float = 2.0
    db_pool_max: int = 20
    # Seconds an API request waits for a pool connection and for each statement before it
    # answers 503 (a stalled database must not hang the API); background loops wait longer.
    database_timeout: float = 5.0
    # Seconds each database call of a background loop (scheduler's round writes, results
    # consumer, sweeper, heartbeat deadlines, leases, upkeep, rollups, dispatcher) waits for
    # a pool connection and for each statement; then the loop backs off and retries.
    database_background_timeout: float = 10.0
    # Rounds whose jobs were published while the database was unavailable, kept in memory
    # until they can be written; beyond this the oldest are dropped (about 10 minutes of
    # 10,000 monitors at a 60 s interval, 16 of 100 monitors at 1 s).
    schedule_buffer_rounds: int = 100_000
    # Seconds a heartbeat ping waits for the commit that stores it before it answers 503.
    heartbeat_ping_timeout: float = 2.0
    # Per API key across all controllers: requests per window (a key may set its own limit).
    rate_limit_requests: int = 600
    rate_limit_window: float = 60.0
    # Seconds a controller keeps an API key row in memory (0: read the database every
    # request); a revoke reaches every controller at once over NATS regardless.
    api_key_cache_seconds: float = 5.0
    # Statistics: rollup step period (s); days kept per level (None keeps forever).
    rollup_interval: float = 10.0
    retention_raw_days: float | None = 7
    retention_minute_days: float | None = 30
    retention_hour_days: float | None = 365
    retention_day_days: float | None = None
    # Heartbeat ping history: days kept; retention drops whole daily partitions (hourly).
    heartbeat_ping_retention_days: float = 30
    # Status pages: HMAC secret for private-page cookies (when empty, a random one stored once
    # in the database and shared by every controller), public base URL for links in mail.
    status_page_secret: str = ""
    public_url: str = ""
    # Let anonymous webhook subscribers name private/loopback/link-local addresses (tests, labs).
    subscriber_webhooks_allow_private: bool = False
    # Let notification channels (webhook, Slack, ntfy, ... URLs) name private/loopback/link-local
    # addresses: receivers on an internal network, tests. Apart from the subscriber setting
    # because channels are set by API-key holders, subscribers by anonymous visitors.
    notification_channels_allow_private: bool = False
    # SMTP for status-page subscriber mail (confirmation links, incident posts); empty host = off.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "status@localhost"
    smtp_verify: bool = True
    log_level: str = "INFO"
    # Addresses (CIDRs, e.g. 10.0.0.0/8 or 127.0.0.1/32) of reverse proxies that terminate
    # TLS: a request from one of them with X-Forwarded-Proto: https counts as served over
    # HTTPS, so the console's and private status pages' cookies are marked Secure, and the
    # client's address (rate limits, audit log) is the right-most untrusted address of its
    # X-Forwarded-For. Empty: only the controller's own TLS counts and the peer is the
    # client (the headers are never believed from elsewhere).
    trusted_proxies: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.controller_id:
            self.controller_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    # `text` (one line per event) or `json` (JSON lines: time, level, logger, message and the
    # event's fields such as request_id, monitor_id, region).
    log_format: Literal["text", "json"] = "text"
    # Seconds between two reads of the fleet-state gauges of /metrics (monitors by status,
    # open incidents, queued deliveries, outbox lag): a few counts each time.
    state_metrics_interval: float = 15.0

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """trusted_proxies parsed (load() refuses a bad one; here one is skipped)."""
        out = []
        for cidr in self.trusted_proxies:
            try:
                out.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                continue
        return out

    def region_ids(self) -> list[str]:
        return [r.id for r in self.regions]

    def nats_credentials_file(self) -> str | None:
        if self.nats_credentials or not self.fleet_trust_dir:
            return self.nats_credentials
        return str(Path(self.fleet_trust_dir) / "controller.creds")

    def nats_tls_ca_file(self) -> str | None:
        if self.nats_tls_ca or not self.fleet_trust_dir:
            return self.nats_tls_ca
        ca = Path(self.fleet_trust_dir) / "ca.pem"
        return str(ca) if ca.exists() else None

    def nats_tls_cert_files(self) -> tuple[str | None, str | None]:
        """(certificate, key) for mutual TLS, or (None, None)."""
        if self.nats_tls_cert or not self.fleet_trust_dir:
            return self.nats_tls_cert, self.nats_tls_key
        cert, key = (Path(self.fleet_trust_dir) / f"controller-{n}.pem" for n in ("cert", "key"))
        return (str(cert), str(key)) if cert.exists() and key.exists() else (None, None)


def security_problem(cfg: ControllerConfig) -> str | None:
    """Why `controller serve` must not start with `cfg` (no NATS credential and no explicit
    insecure mode), or None. In-process apps (tests) are built without this check."""
    if cfg.nats_credentials_file() or cfg.nats_insecure:
        return None
    return (
        "no NATS credential: set fleet_trust_dir (PROBEFLEET_FLEET_TRUST_DIR, made by `probefleet "
        "controller init-fleet`) or nats_credentials (PROBEFLEET_NATS_CREDENTIALS), or pass "
        "--insecure-nats (PROBEFLEET_NATS_INSECURE=true) to run on a NATS without authentication"
    )


class ConfigError(ValueError):
    """The configuration is invalid; the message says where."""


# Boolean settings that have a PROBEFLEET_<NAME> variable.
_ENV_BOOLS = {
    "nats_insecure": "NATS_INSECURE",
    "notification_channels_allow_private": "NOTIFICATION_CHANNELS_ALLOW_PRIVATE",
    "subscriber_webhooks_allow_private": "SUBSCRIBER_WEBHOOKS_ALLOW_PRIVATE",
}
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _env_bool(name: str) -> bool | None:
    """PROBEFLEET_<NAME> as a boolean (true/false, 1/0, yes/no; any case), None when unset.

    Parsed here rather than by msgspec's lax conversion, which refuses "yes" with a message
    naming the field, not the variable the user set."""
    value = env_setting(name)
    if value is None:
        return None
    flag = _BOOL_WORDS.get(value.strip().lower())
    if flag is None:
        raise ConfigError(f"PROBEFLEET_{name}={value!r}: use true or false (also 1/0, yes/no)")
    return flag


def load(path: Path | None = None, **overrides: object) -> ControllerConfig:
    """Config from an optional TOML/JSON file, then env vars, then explicit overrides."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = read_file(path)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    for key, env in (
        ("database_url", "DATABASE_URL"),
        ("nats_url", "NATS_URL"),
        ("host", "HOST"),
        ("port", "PORT"),
        ("controller_id", "CONTROLLER_ID"),
        ("log_level", "LOG_LEVEL"),
        ("status_page_secret", "STATUS_PAGE_SECRET"),
        ("public_url", "PUBLIC_URL"),
        ("smtp_host", "SMTP_HOST"),
        ("smtp_port", "SMTP_PORT"),
        ("smtp_username", "SMTP_USERNAME"),
        ("smtp_password", "SMTP_PASSWORD"),
        ("smtp_from", "SMTP_FROM"),
        ("smtp_security", "SMTP_SECURITY"),
        ("nats_stream_replicas", "NATS_STREAM_REPLICAS"),
        ("fleet_trust_dir", "FLEET_TRUST_DIR"),
        ("nats_credentials", "NATS_CREDENTIALS"),
        ("log_format", "LOG_FORMAT"),
        ("nats_tls_ca", "NATS_TLS_CA"),
        ("nats_tls_cert", "NATS_TLS_CERT"),
        ("nats_tls_key", "NATS_TLS_KEY"),
    ):
        value = env_setting(env)
        if value is not None:
            data[key] = value
    for key, env in _ENV_BOOLS.items():
        flag = _env_bool(env)
        if flag is not None:
            data[key] = flag
    urls = env_setting("FLEET_NATS_URLS")
    if urls is not None:
        data["fleet_nats_urls"] = [u.strip() for u in urls.split(",") if u.strip()]
    proxies = env_setting("TRUSTED_PROXIES")
    if proxies is not None:
        data["trusted_proxies"] = [p.strip() for p in proxies.split(",") if p.strip()]
    regions = env_setting("REGIONS")
    if regions is not None:
        # Known region ids keep their city, country and coordinates.
        known = {r.id: msgspec.to_builtins(r) for r in DEFAULT_REGIONS}
        ids = [r.strip() for r in regions.split(",") if r.strip()]
        data["regions"] = [known.get(r, {"id": r}) for r in ids]
    data.update({k: v for k, v in overrides.items() if v is not None})
    security = data.get("smtp_security", "starttls")
    if security not in get_args(SmtpSecurity):
        allowed = ", ".join(get_args(SmtpSecurity))
        raise ConfigError(f"smtp_security {security!r}: use one of {allowed}")
    try:
        # strict=False: values from the environment are strings ("8080" for a port).
        cfg = msgspec.convert(data, ControllerConfig, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(str(e)) from e
    for cidr in cfg.trusted_proxies:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {cidr!r} is not an address or CIDR (10.0.0.0/8)") from None
    if cfg.diagnostics_per_region_minute < 0:
        raise ConfigError("diagnostics_per_region_minute must be 0 (off) or more")
    if not 0 <= cfg.dispatch_lookahead <= 10:
        raise ConfigError(f"dispatch_lookahead {cfg.dispatch_lookahead}: use 0 to 10 seconds")
    if not 1 <= cfg.nats_stream_replicas <= 5:
        raise ConfigError(f"nats_stream_replicas {cfg.nats_stream_replicas}: use 1 to 5 (JetStream's limit)")
    from probefleet.shared.subjects import valid_region

    for r in cfg.regions:
        if not valid_region(r.id):
            raise ConfigError(f"region id {r.id!r}: use lower-case letters, digits and dashes")
    if not 1 <= cfg.results_ack_wait <= 3600:
        raise ConfigError(f"results_ack_wait {cfg.results_ack_wait}: use 1 to 3600 seconds")
    if not 0 <= cfg.results_gather <= 1:
        raise ConfigError(f"results_gather {cfg.results_gather}: use 0 to 1 second")
    if cfg.state_metrics_interval <= 0:
        raise ConfigError("state_metrics_interval must be positive")
    return cfg
