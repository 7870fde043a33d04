"""NATS user credentials and connection options, for the probe and the controller alike.

A probe makes its own nkey pair (`new_user_keypair`): the seed never leaves its host, the
controller only ever sees the public key and signs a user JWT for it. `write_creds` keeps
both in the standard NATS `.creds` file that nats-py, the nats CLI and nats-server's leaf
remotes read. `connect_options` turns the settings (credentials file, CA of the server's
certificate, the probe's inbox prefix) into keyword arguments for `nats.connect`.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import Any

_SEED_BYTES = 32
_UNSAFE_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def new_user_keypair() -> tuple[bytes, str]:
    """A fresh user nkey: (seed b"SU...", public key "U...")."""
    # Imported here, not at the top: a probe started with credentials gets nkeys through
    # nats-py, and one without never needs its libsodium (about 1 MiB of every probe).
    import nkeys

    seed = nkeys.encode_seed(os.urandom(_SEED_BYTES), nkeys.PREFIX_BYTE_USER)
    kp = nkeys.from_seed(bytearray(seed))
    public = kp.public_key.decode()
    kp.wipe()
    return bytes(seed), public


def public_key_of(seed: bytes) -> str:
    import nkeys

    kp = nkeys.from_seed(bytearray(seed))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def creds_text(jwt: str, seed: bytes) -> str:
    """The standard `.creds` layout (nsc's): the user JWT, then the seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically: a reader sees the old file or the
    new one, never a part, and the content is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_creds(path: Path, jwt: str, seed: bytes) -> None:
    """The `.creds` file at `path`, 0600, replaced atomically."""
    write_secret(path, creds_text(jwt, seed))


def read_creds_jwt(path: Path) -> str:
    """The user JWT of a `.creds` file (ValueError when there is none)."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN NATS USER JWT") and i + 1 < len(lines):
            return lines[i + 1].strip()
    raise ValueError(f"{path}: no NATS user JWT in it (not a .creds file)")


def probe_inbox_prefix(probe_id: str) -> str:
    """The reply-subject prefix of one probe: its credential may subscribe only below it, so
    it hears the acknowledgements of its own results and nobody else's replies."""
    return f"_INBOX_{_UNSAFE_TOKEN.sub('_', probe_id)}"


def tls_context(
    ca_file: Path | None, *, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """Verifying client context: the system's CAs, or only `ca_file` when given; a client
    certificate for servers that ask for one (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


class NatsRefusedError(RuntimeError):
    """NATS refused this client for good (credential revoked, expired or unknown, TLS not
    trusted): retrying cannot help. The message is one readable line."""


def refused_at_connect(exc: BaseException) -> bool:
    """Whether `exc`, met while connecting, means NATS will not take this client as it is
    configured (wrong or revoked credential, untrusted server certificate, TLS required)."""
    text = str(exc).lower()
    return (
        isinstance(exc, ssl.SSLCertVerificationError)
        or "authorization violation" in text
        or "authentication revoked" in text
        or "authentication expired" in text
        or "tls required" in text
    )


class _TlsEofNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


def quiet_tls_eof_warning() -> None:
    """asyncio logs "returning true from eof_received() has no effect when using ssl" each
    time one of nats-py's TLS connections ends (its asyncio streams ask to keep the socket
    half-open, which TLS cannot): a WARNING with every disconnect that says nothing."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _TlsEofNoise) for f in logger.filters):
        logger.addFilter(_TlsEofNoise())


def connect_options(
    creds: Path | None,
    ca_file: Path | None,
    *,
    url: str = "",
    inbox_prefix: str | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `nats.connect`: the credentials, a TLS context when a CA or a
    client certificate is given or `url` says tls://, and the inbox prefix."""
    options: dict[str, Any] = {}
    if creds is not None:
        options["user_credentials"] = str(creds)
    if ca_file is not None or cert_file is not None or url.startswith("tls://"):
        options["tls"] = tls_context(ca_file, cert_file=cert_file, key_file=key_file)
        quiet_tls_eof_warning()
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    return options
