"""`probefleet probe run` (the agent) and `probefleet probe check` (one check, locally)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import msgspec
from click.core import ParameterSource

from probefleet.shared import logs, wire
from probefleet.shared.evidence import unpack_body
from probefleet.shared.redact import redact_url

RECORD_TYPES = ["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR"]


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(coro)


@click.group()
def probe() -> None:
    """The probe agent and local one-off checks."""


@probe.command()
@click.option(
    "--region",
    envvar="PROBEFLEET_REGION",
    help="Region this probe serves (or PROBEFLEET_REGION[_FILE], region in --config).",
)
@click.option("--nats-url", envvar="PROBEFLEET_NATS_URL")
@click.option(
    "--nats-credentials",
    envvar="PROBEFLEET_NATS_CREDENTIALS",
    help="The probe's NATS credential (.creds file, kept 0600).",
)
@click.option(
    "--nats-tls-ca", envvar="PROBEFLEET_NATS_TLS_CA", help="CA of the NATS server's certificate (PEM)."
)
@click.option(
    "--insecure-nats",
    "nats_insecure",
    is_flag=True,
    default=None,
    envvar="PROBEFLEET_NATS_INSECURE",
    help="Run without a NATS credential, on a NATS without authentication (warned at every start).",
)
@click.option(
    "--source-address", envvar="PROBEFLEET_SOURCE_ADDRESS", help="Bind outgoing connections to this address."
)
@click.option("--concurrency", envvar="PROBEFLEET_CONCURRENCY", type=click.IntRange(min=1))
@click.option("--probe-id", envvar="PROBEFLEET_PROBE_ID")
@click.option("--metrics-listen", envvar="PROBEFLEET_PROBE_METRICS_LISTEN", help="host:port for /metrics.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--enroll",
    "enroll_token",
    envvar="PROBEFLEET_ENROLL_TOKEN",
    help="Enrollment token (`probefleet region enroll`): join with it on first start.",
)
@click.option(
    "--controller",
    "controller_url",
    envvar="PROBEFLEET_CONTROLLER_URL",
    help="The controller's URL, for --enroll (https unless loopback).",
)
@click.option(
    "--state-dir",
    envvar="PROBEFLEET_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the probe keeps its credential and id [default: /var/lib/probefleet as root,"
    " else ~/.local/state/probefleet].",
)
@click.option(
    "--insecure-controller",
    is_flag=True,
    envvar="PROBEFLEET_INSECURE_CONTROLLER",
    help="Allow an http:// controller URL that is not loopback (the token crosses in the clear).",
)
@click.option(
    "--controller-ca",
    envvar="PROBEFLEET_CONTROLLER_CA",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA of the controller's certificate (PEM), when not one the system trusts.",
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--log-format",
    envvar="PROBEFLEET_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    help="Log lines as text (default) or JSON lines with the events' fields.",
)
def run(
    config_path: Path | None,
    log_level: str,
    log_format: str | None,
    enroll_token: str | None,
    controller_url: str | None,
    state_dir: Path | None,
    insecure_controller: bool,
    controller_ca: Path | None,
    **overrides: Any,
) -> None:
    """Take this region's jobs from NATS until SIGTERM, then drain and exit 0.

    With --enroll TOKEN --controller URL, a first start exchanges the token for the probe's
    own credential (kept in --state-dir); later starts find it there and skip enrollment."""
    from probefleet.probe.config import load_probe_config, security_problem

    logs.setup(log_level, "json" if log_format == "json" else "text", role="probe")
    enrolled = _enrolled(
        enroll_token, controller_url, state_dir, insecure_controller, controller_ca, overrides
    )
    overrides = {**enrolled, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        config = load_probe_config(config_path, log_format=log_format, **overrides)
    except (ValueError, OSError) as exc:
        raise click.UsageError(f"invalid configuration: {exc}") from None
    logs.setup(log_level, config.log_format, role="probe", probe_id=config.probe_id, region=config.region)
    if (problem := security_problem(config)) is not None:
        raise click.UsageError(problem)
    if not config.nats_credentials:
        logging.getLogger("probefleet.probe").warning(
            "insecure NATS: this probe connects without a credential (--insecure-nats); "
            "anyone who reaches %s can read every job and publish results for any region",
            redact_url(config.nats_url),
        )
    if _run(_serve(config)):
        from probefleet.probe.agent import EXIT_REFUSED

        sys.exit(EXIT_REFUSED)


def _enrolled(
    token: str | None,
    controller: str | None,
    state_dir: Path | None,
    insecure: bool,
    ca_file: Path | None,
    overrides: dict[str, Any],
) -> dict[str, object]:
    """Config fields from the state directory's enrollment, enrolling first when there is
    none and a token is given; {} without either. A failed enrollment ends the command with
    one line and exit 1, having written nothing."""
    from probefleet.probe import enroll

    state_dir = state_dir or enroll.default_state_dir()
    log = logging.getLogger("probefleet.probe")
    try:
        state = enroll.load_state(state_dir)
        if state is not None and token:
            log.info(
                "already enrolled probe_id=%s region=%s state_dir=%s", state.probe_id, state.region, state_dir
            )
        if state is None and token:
            if not controller:
                raise click.UsageError("--enroll needs --controller URL (or PROBEFLEET_CONTROLLER_URL)")
            state = enroll.enroll(
                controller,
                token,
                state_dir,
                insecure=insecure,
                probe_id=overrides.get("probe_id"),
                ca_file=ca_file,
            )
            log.info("enrolled probe_id=%s region=%s state_dir=%s", state.probe_id, state.region, state_dir)
    except enroll.EnrollError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if state is None:
        return {}
    for name in ("region", "probe_id"):
        given = overrides.get(name)
        if given is not None and given != getattr(state, name):
            raise click.UsageError(
                f"--{name.replace('_', '-')} {given}: this probe is enrolled as {state.probe_id} in"
                f" region {state.region} ({state_dir}); its credential is good for nothing else"
            )
    return enroll.config_overrides(state, state_dir)


async def _serve(config: Any) -> bool:
    """Run the agent until SIGTERM/SIGINT (drain, then False) or until NATS refuses the probe
    for good (one error line, then True: the command exits with EXIT_REFUSED instead of
    reconnecting in a loop)."""
    from probefleet.probe import metrics
    from probefleet.probe.agent import Agent, NatsRefusedError

    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if config.metrics_listen:
        runner = await metrics.serve(
            agent.metrics,
            config.metrics_listen,
            healthy=lambda: agent.healthy,
            ready=lambda: agent.ready,
        )
    start = asyncio.create_task(agent.start())
    ended = [asyncio.create_task(stop.wait()), asyncio.create_task(agent.refused.wait())]
    await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
    for task in ended:
        task.cancel()
    refused = agent.refused.is_set()
    started = start.done() and not start.cancelled() and start.exception() is None
    if not start.done():
        start.cancel()
    with contextlib.suppress(asyncio.CancelledError, NatsRefusedError):
        await start
    if refused:
        await agent.abort()
        logging.getLogger("probefleet.probe").error(
            "probe stopped probe_id=%s: %s", config.probe_id, agent.refused_reason
        )
    elif started:
        await agent.stop()
    if runner is not None:
        await runner.cleanup()
    return refused


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r}: use 'Name: value'", param_hint="--header")
        headers[name.strip()] = content.strip()
    return headers


def _status(value: str) -> int | str:
    return int(value) if value.isdigit() else value


# The options each kind takes, besides --kind, --timeout, --source-address and --json.
# build_spec hands _spec_fields only these, and `check` refuses any other option given.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "http": (
        "url",
        "method",
        "header",
        "body",
        "body_kind",
        "bearer_token",
        "expected_status",
        "follow_redirects",
        "max_redirects",
        "insecure",
        "ca_file",
        "expect",
        "exclude",
        "regex",
        "degraded_ms",
    ),
    "tcp": ("host", "port", "tls", "insecure", "ca_file", "send", "expect", "regex", "degraded_ms"),
    "udp": ("host", "port", "send", "expect", "regex", "degraded_ms"),
    "icmp": ("host", "count", "interval", "max_packet_loss", "degraded_ms"),
    "dns": ("name", "record_type", "resolver", "expected_value", "match", "expected_rcode", "degraded_ms"),
    "tls": (
        "host",
        "port",
        "server_name",
        "warn_days",
        "insecure",
        "ca_file",
        "expected_issuer",
        "min_version",
        "starttls",
        "check_ocsp",
    ),
    # What the controller runs where a monitor went down: traceroute, DNS, TLS chain.
    "diagnose": ("host", "port", "tls", "server_name", "resolver", "tcp_trace"),
    # The kinds whose settings are nested (steps, ...): a YAML or JSON file of the fields
    # a monitor of the kind takes (docs/checks.md), as in the config file format.
    **dict.fromkeys(wire.PROBE_KINDS[wire.PROBE_KINDS.index("api_flow") :], ("spec_file",)),
}


def _ca(o: dict[str, Any]) -> dict[str, Any]:
    return {"ca_pem": Path(o["ca_file"]).read_text() if o["ca_file"] else None}


def _spec_fields(kind: str, o: dict[str, Any]) -> dict[str, Any]:
    """The spec as a dict of the options of `kind` (None means unset)."""
    if KIND_OPTIONS[kind] == ("spec_file",):
        return {"spec_file": o["spec_file"]}  # read by build_spec
    match kind:
        case "http":
            return _ca(o) | {
                "url": o["url"],
                "method": o["method"],
                "headers": _headers(o["header"]),
                "body": o["body"],
                "body_kind": o["body_kind"],
                "expected_status": [_status(s) for s in o["expected_status"]] or None,
                "follow_redirects": o["follow_redirects"],
                "max_redirects": o["max_redirects"],
                "verify_tls": not o["insecure"],
                "expected_content": o["expect"],
                "excluded_content": o["exclude"],
                "content_regex": o["regex"],
                "bearer_token": o["bearer_token"],
                "degraded_ms": o["degraded_ms"],
            }
        case "tcp":
            return _ca(o) | {
                "host": o["host"],
                "port": o["port"],
                "tls": o["tls"],
                "verify_tls": not o["insecure"],
                "send": o["send"],
                "expect": o["expect"],
                "expect_regex": o["regex"],
                "degraded_ms": o["degraded_ms"],
            }
        case "udp":
            return {
                "host": o["host"],
                "port": o["port"],
                "send": o["send"],
                "expect": o["expect"],
                "expect_regex": o["regex"],
                "degraded_ms": o["degraded_ms"],
            }
        case "icmp":
            return {
                "host": o["host"],
                "count": o["count"],
                "interval": o["interval"],
                "max_packet_loss": o["max_packet_loss"],
                "degraded_ms": o["degraded_ms"],
            }
        case "dns":
            return {
                "name": o["name"],
                "record_type": o["record_type"],
                "resolver": o["resolver"],
                "expected_values": list(o["expected_value"]) or None,
                "match": o["match"],
                "expected_rcode": o["expected_rcode"],
                "degraded_ms": o["degraded_ms"],
            }
        case "diagnose":
            return {
                "host": o["host"],
                "port": o["port"],
                "tls": o["tls"],
                "server_name": o["server_name"],
                "resolver": o["resolver"],
                "tcp": o["tcp_trace"],
            }
        case _:
            return _ca(o) | {
                "host": o["host"],
                "port": o["port"],
                "server_name": o["server_name"],
                "warn_days": o["warn_days"],
                "verify_chain": not o["insecure"],
                "expected_issuer": o["expected_issuer"],
                "min_version": o["min_version"],
                "starttls": o["starttls"],
                "check_ocsp": o["check_ocsp"],
            }


def _file_entry(kind: str, path: str | None) -> dict[str, Any]:
    """The mapping of a spec file (YAML or JSON, which YAML reads too), its `${env:NAME}` and
    `${file:/path}` references replaced as the config file format replaces them."""
    import yaml

    from probefleet.shared.cli_files import SECRET

    if path is None:
        raise click.UsageError(f"--kind {kind} takes its settings from --spec-file (docs/checks.md)")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.UsageError(f"--spec-file: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError("--spec-file must hold a mapping of the kind's fields")
    if data.get("type", kind) != kind:
        raise click.UsageError(f"--spec-file holds a {data['type']} check, not {kind}")

    def one(m: re.Match[str]) -> str:
        source, name = m.group(1), m.group(2)
        if source == "env":
            if name not in os.environ:
                raise click.UsageError(f"--spec-file: environment variable {name} is not set")
            return os.environ[name]
        try:
            return Path(name).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise click.UsageError(f"--spec-file: cannot read secret file {name}: {exc.strerror}") from None

    def sub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return SECRET.sub(one, value) if isinstance(value, str) else value

    return dict(sub(data))


def _file_fields(kind: str, path: str | None) -> dict[str, Any]:
    """The check's fields of a spec file. The file may be a monitor entry as the config file
    writes it (docs/checks.md's examples): its monitor settings (name, timeout,
    check_interval, ...: the config schema's fields of the kind that the check does not have)
    are left out, and `url` (or `target`) of a kind with a host and port is read as them, as
    the API reads it. Any other field is refused: a misspelt one would run another check."""
    from probefleet.shared.cli_files import schema

    data = _file_entry(kind, path)
    data.pop("type", None)
    spec_type = _spec_type(kind)
    fields = set(spec_type.__struct_fields__)
    if "host" in fields and "url" not in fields:
        target = data.pop("url", data.pop("target", None))
        if isinstance(target, str) and "host" not in data:
            parts = urlsplit(target if "://" in target else f"//{target}")
            try:
                port = parts.port
            except ValueError:
                raise click.UsageError(f"--spec-file: url {target!r} has no valid port") from None
            data["host"] = parts.hostname or target
            if port is not None:
                data.setdefault("port", port)
    monitor = schema()["$defs"].get(f"{kind.capitalize()}Monitor", {}).get("properties", {})
    unknown = sorted(k for k in data if k not in fields and k not in monitor)
    if unknown:
        raise click.UsageError(
            f"--spec-file: not a field of a {kind} check: {', '.join(unknown)} (docs/checks.md)"
        )
    return {k: v for k, v in data.items() if k in fields}


def _spec_type(kind: str) -> Any:
    return {t.__struct_config__.tag: t for t in wire.CheckSpec.__args__}[kind]


def spec_file_timeout(path: str) -> float | None:
    """A monitor entry's `timeout`, the budget of a check run from it without --timeout."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    value = data.get("timeout") if isinstance(data, dict) else None
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


def build_spec(kind: str, options: dict[str, Any]) -> wire.CheckSpec:
    """Options to a spec struct; a click.UsageError (exit 2) says what is wrong."""
    mine = {name: options[name] for name in KIND_OPTIONS[kind]}
    raw = _spec_fields(kind, mine)
    if "spec_file" in raw:
        fields = _file_fields(kind, raw["spec_file"])
    else:
        fields = {k: v for k, v in raw.items() if v is not None}
    try:
        return msgspec.convert(fields, _spec_type(kind))
    except msgspec.ValidationError as exc:
        raise click.UsageError(f"--kind {kind}: {_readable(exc)}") from None


def refuse_foreign_options(ctx: click.Context, kind: str, options: dict[str, Any]) -> None:
    """Exit 2 naming every option given on the command line that `kind` does not take:
    ignoring one would run a different check than the one asked for."""
    params = {p.name: p for p in ctx.command.params}
    foreign = [
        name
        for name in options
        if name not in KIND_OPTIONS[kind] and ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    ]
    if not foreign:
        return
    lines = []
    for name in foreign:
        param = params[name]
        flag = "/".join([*param.opts, *param.secondary_opts])
        kinds = ", ".join(k for k, names in KIND_OPTIONS.items() if name in names)
        lines.append(f"{flag} does not apply to --kind {kind} (only to {kinds})")
    raise click.UsageError("; ".join(lines), ctx=ctx)


def _readable(exc: msgspec.ValidationError) -> str:
    text = str(exc).replace("Object missing required field", "missing option")
    return re.sub(r"`\$?\.?(\w+)`", lambda m: "--" + m.group(1).replace("_", "-"), text)


@probe.command()
@click.option("--kind", type=click.Choice(list(wire.PROBE_KINDS)), required=True)
@click.option("--url", help="http: target URL.")
@click.option("--method", help="http: request method.")
@click.option("--header", multiple=True, help="http: 'Name: value' (repeatable).")
@click.option("--body", help="http: request body.")
@click.option("--body-kind", type=click.Choice(["raw", "json", "form"]))
@click.option("--bearer-token", help="http: Authorization bearer token.")
@click.option("--expected-status", multiple=True, help="http: code or class like 2xx (repeatable).")
@click.option("--follow-redirects/--no-follow-redirects", default=None)
@click.option("--max-redirects", type=click.IntRange(min=0))
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="Extra CA (PEM).")
@click.option("--expect", help="http: expected body content; tcp/udp: expected reply.")
@click.option("--exclude", help="http: content that must not appear.")
@click.option("--regex", is_flag=True, default=None, help="--expect/--exclude are regexes.")
@click.option("--host", help="tcp, udp, icmp, tls, diagnose: target host.")
@click.option("--port", type=click.IntRange(1, 65535))
@click.option(
    "--tls", is_flag=True, default=None, help="tcp: wrap the connection in TLS; diagnose: read the TLS chain."
)
@click.option(
    "--tcp-trace", is_flag=True, default=None, help="diagnose: traceroute with TCP SYNs to --port (else UDP)."
)
@click.option("--send", help="tcp, udp: payload to send.")
@click.option("--count", type=click.IntRange(min=1), help="icmp: echo requests.")
@click.option("--interval", type=click.FloatRange(min=0), help="icmp: seconds between requests.")
@click.option("--max-packet-loss", type=click.FloatRange(0, 1), help="icmp: tolerated loss 0..1.")
@click.option("--name", help="dns: name to query.")
@click.option("--record-type", type=click.Choice(RECORD_TYPES, case_sensitive=False))
@click.option("--resolver", help="dns, diagnose: resolver host:port.")
@click.option("--expected-value", multiple=True, help="dns: expected answer (repeatable).")
@click.option("--match", type=click.Choice(["any", "all"]))
@click.option("--expected-rcode", help="dns: NOERROR, NXDOMAIN, SERVFAIL ...")
@click.option("--server-name", help="tls, diagnose: SNI name.")
@click.option("--warn-days", type=int, help="tls: degraded below this many days left.")
@click.option("--expected-issuer", help="tls: text the issuer must contain.")
@click.option("--min-version", help="tls: lowest acceptable version, e.g. TLSv1.2.")
@click.option(
    "--starttls",
    type=click.Choice(["none", "smtp", "imap", "pop3"]),
    help="tls: upgrade a plain-text session first.",
)
@click.option("--check-ocsp/--no-check-ocsp", default=None, help="tls: ask the certificate's OCSP responder.")
@click.option("--degraded-ms", type=float, help="Degraded when slower than this.")
@click.option(
    "--spec-file",
    type=click.Path(exists=True, dir_okay=False),
    help="api_flow and the kinds after it: a YAML or JSON file of the check's fields or a monitor entry.",
)
@click.option("--timeout", "budget", type=click.FloatRange(min=0.01), default=10.0, show_default=True)
@click.option("--source-address", help="Bind outgoing connections to this address.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def check(
    ctx: click.Context, kind: str, budget: float, source_address: str | None, as_json: bool, **options: Any
) -> None:
    """Run one check locally and print the result (exit 1 when it fails, 2 for options that
    are wrong or do not apply to the kind)."""
    refuse_foreign_options(ctx, kind, options)
    if options["record_type"]:
        options["record_type"] = options["record_type"].upper()
    spec = build_spec(kind, options)
    if options.get("spec_file") and ctx.get_parameter_source("budget") is ParameterSource.DEFAULT:
        budget = spec_file_timeout(options["spec_file"]) or budget
    outcome, elapsed_ms = _run(_check_once(kind, spec, budget, source_address))
    data = {"kind": kind, **msgspec.to_builtins(outcome), "duration_ms": round(elapsed_ms, 3)}
    details = data.get("details")
    if isinstance(details, dict) and isinstance(details.get("evidence"), dict):
        details["evidence"] = unpack_body(details["evidence"])  # as the API shows it
    if as_json:
        click.echo(msgspec.json.encode(data).decode())
    else:
        _print_human(data)
    sys.exit(1 if outcome.status == wire.Status.FAIL else 0)


async def _check_once(
    kind: str, spec: wire.CheckSpec, budget: float, source_address: str | None
) -> tuple[Any, float]:
    from probefleet.probe.checkers import CHECKERS, dns, http

    start = time.perf_counter()
    try:
        outcome = await CHECKERS[kind](spec, timeout=budget, source_address=source_address)
    finally:
        await http.close_sessions()
        await dns.close_resolvers()
    return outcome, (time.perf_counter() - start) * 1000


def _print_human(data: dict[str, Any]) -> None:
    head = f"{data['status']:<8} {data['kind']}"
    if data.get("reason"):
        head += f"  {data['reason']}"
    if data.get("status_code") is not None:
        head += f"  HTTP {data['status_code']}"
    click.echo(f"{head}  {data['duration_ms']:.1f} ms")
    if data.get("message"):
        click.echo(f"  {data['message']}")
    for name, value in {**data.get("timings", {}), **data.get("details", {})}.items():
        click.echo(f"  {name:<16} {value}")


@probe.command("check-config")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The enrolled probe's state directory (or PROBEFLEET_STATE_DIR), as `probe run` reads it.",
)
def check_config(config_path: Path | None, state_dir: Path | None = None) -> None:
    """Validate the probe's configuration (file plus PROBEFLEET_* variables, and the
    enrollment in the state directory) and print it, secrets redacted."""
    import msgspec

    from probefleet.probe import enroll
    from probefleet.probe.config import load_probe_config
    from probefleet.shared.redact import redact_url

    if state_dir is None:
        state_dir = (
            Path(env) if (env := os.environ.get("PROBEFLEET_STATE_DIR")) else enroll.default_state_dir()
        )
    try:
        state = enroll.load_state(state_dir)
    except enroll.EnrollError as e:
        raise click.ClickException(str(e)) from None
    enrolled = enroll.config_overrides(state, state_dir) if state else {}
    if os.environ.get("PROBEFLEET_NATS_URL"):
        enrolled.pop("nats_url", None)  # as in `probe run`: the variable wins over the enrolled URL
    try:
        cfg = load_probe_config(config_path, **enrolled)
    except (ValueError, OSError) as e:
        raise click.ClickException(f"invalid configuration: {e}") from None
    data = msgspec.to_builtins(cfg)
    data["nats_url"] = redact_url(cfg.nats_url)
    click.echo(msgspec.json.format(msgspec.json.encode(data)).decode())
