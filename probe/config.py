"""Probe configuration: defaults beside fields, env overrides, unknown keys rejected."""

from __future__ import annotations

import importlib.util
import socket
import uuid
from pathlib import Path
from typing import Literal

import msgspec

from probefleet.shared.config import env_setting, read_file
from probefleet.shared.subjects import valid_region


class ProbeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    region: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    source_address: str | None = None
    concurrency: int = 1000
    probe_id: str = ""
    metrics_listen: str | None = None
    heartbeat_interval: float = 2.0
    # Jobs waiting for a free slot beyond this many are dropped (and counted).
    max_pending: int = 10_000
    # Results kept while NATS is unreachable; older ones are dropped past this.
    publish_buffer: int = 50_000
    publishers: int = 16
    # Results of jobs that allow it go to JetStream in batches: a publisher waits this long
    # after the first ready result for others (never past a job's deadline less the margin),
    # up to this many in one message. 1 sends every result alone.
    result_linger: float = 0.05
    result_batch_max: int = 200
    # A check ends this long before its job's deadline so its result still counts.
    deadline_margin: float = 0.25
    # On SIGTERM, in-flight checks get this long to finish.
    drain_timeout: float = 15.0
    # The probe's NATS credential (.creds: its user JWT and its own nkey seed, 0600), and the
    # CA of the NATS server's certificate when it is not one the system trusts.
    nats_credentials: str | None = None
    nats_tls_ca: str | None = None
    # A client certificate and key, when NATS asks for one (mutual TLS).
    nats_tls_cert: str | None = None
    nats_tls_key: str | None = None
    # Run without a credential (plain NATS with no authentication); `probe run` refuses to
    # start without one of the two, and warns at every start with this.
    nats_insecure: bool = False
    # Per-monitor series on /metrics (docs/metrics.md): the monitor's name as a label (off: a
    # rename would start new series), only monitors with one of these tags (all when empty),
    # only this stable fraction of monitor ids, and dropped after this many intervals unseen.
    monitor_series_name: bool = False
    monitor_series_tags: list[str] = msgspec.field(default_factory=list)
    monitor_series_sample: float = 1.0
    monitor_series_stale_intervals: float = 3.0
    # OpenTelemetry export of check results (spans and phase histograms over OTLP/HTTP) to the
    # collector at this base URL (http://collector:4318); off when empty. Needs the `otel` extra.
    otel_endpoint: str | None = None
    otel_export_interval: float = 10.0
    # `text` (one line per event) or `json` (JSON lines with the event's fields).
    log_format: Literal["text", "json"] = "text"

    def __post_init__(self) -> None:
        if not self.probe_id:
            self.probe_id = f"{socket.gethostname()}-{self.region}-{uuid.uuid4().hex[:6]}"


_ENV = {
    "region": "REGION",
    "nats_url": "NATS_URL",
    "source_address": "SOURCE_ADDRESS",
    "concurrency": "CONCURRENCY",
    "probe_id": "PROBE_ID",
    "metrics_listen": "PROBE_METRICS_LISTEN",
    "nats_credentials": "NATS_CREDENTIALS",
    "nats_tls_ca": "NATS_TLS_CA",
    "nats_tls_cert": "NATS_TLS_CERT",
    "nats_tls_key": "NATS_TLS_KEY",
    "nats_insecure": "NATS_INSECURE",
    "monitor_series_name": "MONITOR_SERIES_NAME",
    "monitor_series_tags": "MONITOR_SERIES_TAGS",
    "monitor_series_sample": "MONITOR_SERIES_SAMPLE",
    "monitor_series_stale_intervals": "MONITOR_SERIES_STALE_INTERVALS",
    "otel_endpoint": "OTEL_ENDPOINT",
    "otel_export_interval": "OTEL_EXPORT_INTERVAL",
    "log_format": "LOG_FORMAT",
    "result_linger": "RESULT_LINGER",
    "result_batch_max": "RESULT_BATCH_MAX",
}

INSECURE_HINT = (
    "give the probe its NATS credential (--nats-credentials FILE or PROBEFLEET_NATS_CREDENTIALS), "
    "or pass --insecure-nats (PROBEFLEET_NATS_INSECURE=true) to run on a NATS without "
    "authentication, where anyone who reaches it can read every job"
)


def security_problem(cfg: ProbeConfig) -> str | None:
    """Why `probe run` must not start with `cfg` (no credential and no explicit insecure
    mode), or None. In-process agents (tests) are built without this check."""
    if cfg.nats_credentials or cfg.nats_insecure:
        return None
    return f"no NATS credential: {INSECURE_HINT}"


def load_probe_config(path: Path | None = None, **overrides: object) -> ProbeConfig:
    """Config from an optional TOML/JSON file, then env vars, then explicit overrides.

    Raises ValueError with a readable message when the result is invalid, OSError when
    a file cannot be read.
    """
    data: dict[str, object] = {}
    if path is not None:
        data = read_file(path)
    for key, env in _ENV.items():
        value = env_setting(env)
        if value is not None:
            data[key] = value
    data.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(tags := data.get("monitor_series_tags"), str):
        data["monitor_series_tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    try:
        # strict=False: values from the environment are strings ("500" for concurrency).
        cfg = msgspec.convert(data, ProbeConfig, strict=False)
    except msgspec.ValidationError as e:
        raise ValueError(str(e)) from e
    if not cfg.region:
        raise ValueError(
            "no region: set `region` in the --config file, PROBEFLEET_REGION or "
            "PROBEFLEET_REGION_FILE, or pass --region to `probefleet probe run`"
        )
    if not valid_region(cfg.region):
        raise ValueError(f"region {cfg.region!r}: use lower-case letters, digits and dashes")
    if cfg.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not 0 < cfg.monitor_series_sample <= 1:
        raise ValueError("monitor_series_sample must be a fraction in (0, 1]")
    if cfg.monitor_series_stale_intervals < 1:
        raise ValueError("monitor_series_stale_intervals must be at least 1")
    if cfg.otel_endpoint:
        if not _otel_installed():
            raise ValueError(
                "otel_endpoint is set but OpenTelemetry is not installed: install the otel extra"
                " (pip install 'probefleet[otel]')"
            )
        if not cfg.otel_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"otel_endpoint {cfg.otel_endpoint!r}: use the collector's http(s):// base URL")
    if not 0 <= cfg.result_linger <= 1:
        raise ValueError("result_linger must be between 0 and 1 second")
    if cfg.result_batch_max < 1:
        raise ValueError("result_batch_max must be at least 1")
    if cfg.otel_export_interval <= 0:
        raise ValueError("otel_export_interval must be positive")
    return cfg


def _otel_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except ImportError:  # the parent package is missing too
        return False
