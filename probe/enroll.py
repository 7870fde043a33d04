"""A probe's enrollment: a one-time token exchanged for the probe's own NATS credential.

`enroll` makes the probe's nkey pair here (the seed never leaves this host), sends only
the public key with the token to the controller's POST /api/v1/enroll, and keeps what
comes back in the state directory:

    nats.creds     the user JWT and the seed (0600)
    nats-ca.pem    the CA of the NATS servers' certificate, when the fleet has its own
    probe.json     probe id, region, NATS URLs, controller; written last, so its presence
                   means a complete enrollment

Later starts find `probe.json` and skip enrollment: the probe id is stable. A refused token
writes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any

import msgspec

from probefleet.shared import natscreds
from probefleet.shared.apiclient import ApiClient, ApiClientError, check_url
from probefleet.shared.version import VERSION

STATE_FILE = "probe.json"
CREDS_FILE = "nats.creds"
CA_FILE = "nats-ca.pem"
# Where a probe keeps its credential without --state-dir: the container image's volume, a
# system service's state folder when running as root, the user's state folder otherwise.
SYSTEM_STATE_DIR = Path("/var/lib/probefleet")


class EnrollError(Exception):
    """Enrollment failed; the message is one line for the operator."""


class ProbeState(msgspec.Struct, kw_only=True):
    probe_id: str
    region: str
    nats_urls: list[str]
    controller: str
    enrolled_at: str
    credentials: str | None = None  # file name in the state directory
    ca_file: str | None = None  # file name in the state directory


def default_state_dir() -> Path:
    if SYSTEM_STATE_DIR.is_dir() and os.access(SYSTEM_STATE_DIR, os.W_OK):
        return SYSTEM_STATE_DIR
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "probefleet"


def load_state(state_dir: Path) -> ProbeState | None:
    """The state of an earlier enrollment, or None when there was none. EnrollError when the
    state is there but unusable (its credential file gone, say)."""
    path = state_dir / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EnrollError(f"cannot read {path}: {e.strerror}") from None
    try:
        state = msgspec.json.decode(raw, type=ProbeState)
    except msgspec.DecodeError as e:
        raise EnrollError(f"{path} is damaged ({e}); remove it and enroll again") from None
    for name in (state.credentials, state.ca_file):
        if name and not (state_dir / name).is_file():
            raise EnrollError(f"{state_dir / name} is missing; remove {path} and enroll again")
    return state


def enroll(
    controller: str,
    token: str,
    state_dir: Path,
    *,
    insecure: bool = False,
    probe_id: str | None = None,
    host: str | None = None,
    ca_file: Path | None = None,
    timeout: float = 30.0,
) -> ProbeState:
    """Exchange `token` for this probe's credential and keep it in `state_dir`. The
    controller URL must be https unless it is loopback or `insecure`."""
    try:
        url = check_url(controller, allow_http=insecure)
    except ValueError as e:
        hint = "" if insecure else " (--insecure-controller allows http)"
        raise EnrollError(f"controller URL: {e}{hint}") from None
    seed, public_key = natscreds.new_user_keypair()
    body: dict[str, Any] = {
        "public_key": public_key,
        "host": host or socket.gethostname(),
        "version": VERSION,
    }
    if probe_id:
        body["probe_id"] = probe_id
    client = ApiClient(url, timeout=timeout, ca_file=ca_file)
    try:
        got = client.data("POST", "/api/v1/enroll", body, headers={"Authorization": f"Bearer {token}"})
    except ApiClientError as e:
        raise EnrollError(f"enrollment refused: {e.message}" if e.status else e.message) from None
    try:
        answer = msgspec.convert(got, _Answer)
    except msgspec.ValidationError as e:
        raise EnrollError(f"the controller's answer to the enrollment is not understood: {e}") from None
    state = ProbeState(
        probe_id=answer.probe_id,
        region=answer.region,
        nats_urls=answer.nats_urls,
        controller=url,
        enrolled_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if answer.jwt:
            natscreds.write_creds(state_dir / CREDS_FILE, answer.jwt, seed)
            state.credentials = CREDS_FILE
        if answer.ca_pem:
            natscreds.write_secret(state_dir / CA_FILE, answer.ca_pem)
            state.ca_file = CA_FILE
        natscreds.write_secret(
            state_dir / STATE_FILE, msgspec.json.format(msgspec.json.encode(state)).decode()
        )
    except OSError as e:
        raise EnrollError(
            f"enrolled as {answer.probe_id}, but cannot write {state_dir}: {e.strerror}"
        ) from None
    return state


class _Answer(msgspec.Struct, kw_only=True):
    probe_id: str
    region: str
    jwt: str | None = None
    nats_urls: list[str] = []
    ca_pem: str | None = None


def config_overrides(state: ProbeState, state_dir: Path) -> dict[str, object]:
    """ProbeConfig fields the enrollment sets: who the probe is, where NATS is, its credential."""
    out: dict[str, object] = {"probe_id": state.probe_id, "region": state.region}
    if state.nats_urls:
        out["nats_url"] = state.nats_urls[0]
    if state.credentials:
        out["nats_credentials"] = str(state_dir / state.credentials)
    if state.ca_file:
        out["nats_tls_ca"] = str(state_dir / state.ca_file)
    return out
