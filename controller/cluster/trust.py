"""The fleet's NATS trust: operator, accounts, per-probe user JWTs, revocation, TLS material.

NATS runs in operator (decentralized JWT) mode. `generate` makes a trust directory once:

    operator.nk, operator.jwt          the operator; signs the account JWTs (revocations too)
    system.nk, system.jwt, system.creds  the system account, and the user that pushes updates
    account.nk, account.jwt            the probefleet account (JetStream on, with limits)
    account-signing.nk                 the account's signing key; signs every user JWT
    controller.creds                   the controller's user: everything inside the account
    ca.pem, ca-key.pem                 a local CA ...
    server-cert.pem, server-key.pem    ... and the NATS server's certificate
    nats-server.conf                   the include for nats-server: operator, resolver, TLS
    controller-cert.pem, -key.pem      with mutual TLS only: the controller's client certificate

Files holding a seed or a private key are 0600. `FleetTrust` is what a running controller
holds: it signs a user JWT for a probe's public key (`issue_probe`) whose permissions name
only that probe's region, and re-signs the account JWT with a revocation list and pushes it
to the servers over the system account (`push_revocations`), which makes nats-server close
the revoked users' connections at once. docs/architecture/fleet.md tells why and how.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from probefleet.shared import natscreds, subjects

ACCOUNT_NAME = "probefleet"
SYSTEM_ACCOUNT_NAME = "SYS"
# JetStream limits of the probefleet account (bytes; -1: only the server's own limits). The
# results and pings streams ask for 512 MiB each (shared/streams.py).
ACCOUNT_DISK_STORAGE = -1
ACCOUNT_MEMORY_STORAGE = -1
# The server certificate is re-issued by `generate` when it expires within this many days.
_RENEW_DAYS = 30
_CERT_DAYS = 825
_CA_DAYS = 3650
_CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
_PUSH_TIMEOUT = 5.0
_DEFAULT_HOSTS = ["localhost", "127.0.0.1", "::1"]
_RUN_INIT = "run `probefleet controller init-fleet`"

_SECRET_FILES = (
    "operator.nk",
    "system.nk",
    "system.creds",
    "account.nk",
    "account-signing.nk",
    "controller.creds",
    "ca-key.pem",
    "server-key.pem",
)
# Made only with mutual TLS.
_OPTIONAL_SECRET_FILES = ("controller-key.pem",)


class TrustError(RuntimeError):
    """The trust directory is missing or incomplete, a key is invalid, or NATS refused an update."""


# ---------------------------------------------------------------- JWT encoding


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())


def encode_jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """A NATS JWT (v2): `claims` with iss set to the signer and jti to the hash of the claims."""
    body = dict(claims, iss=signer.public_key.decode(), jti="")
    body["jti"] = base64.b32encode(hashlib.sha256(msgspec.json.encode(body)).digest()).decode().rstrip("=")
    payload = _b64(msgspec.json.encode(body))
    signature = signer.sign(f"{_HEADER}.{payload}".encode())
    return f"{_HEADER}.{payload}.{_b64(signature)}"


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (our own files, read back)."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, ValueError) as e:
        raise TrustError(f"not a JWT: {e}") from None
    if not isinstance(claims, dict):
        raise TrustError("not a JWT: its claims are not an object")
    return claims


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _public(kp: nkeys.KeyPair) -> str:
    return str(kp.public_key.decode())


def _unlimited_nats() -> dict[str, int]:
    # Every limit explicit: a missing one decodes as 0, which nats-server reads as "none allowed"
    # for some of them.
    return {"subs": -1, "data": -1, "payload": -1}


def _account_claims(
    account: str, name: str, *, signing_keys: list[str], jetstream: bool, revocations: Mapping[str, int]
) -> dict[str, Any]:
    limits: dict[str, Any] = {
        **_unlimited_nats(),
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }
    if jetstream:
        limits |= {
            "mem_storage": ACCOUNT_MEMORY_STORAGE,
            "disk_storage": ACCOUNT_DISK_STORAGE,
            "streams": -1,
            "consumer": -1,
        }
    nats_claims: dict[str, Any] = {
        "limits": limits,
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    }
    if signing_keys:
        nats_claims["signing_keys"] = signing_keys
    if revocations:
        nats_claims["revocations"] = dict(sorted(revocations.items()))
    return {"iat": int(time.time()), "name": name, "sub": account, "nats": nats_claims}


def _user_claims(
    user: str, name: str, *, account: str, permissions: dict[str, Any], iat: int | None = None
) -> dict[str, Any]:
    return {
        "iat": iat if iat is not None else int(time.time()),
        "name": name,
        "sub": user,
        "nats": {
            **permissions,
            **_unlimited_nats(),
            "issuer_account": account,
            "type": "user",
            "version": 2,
        },
    }


def probe_permissions(region: str, probe_id: str) -> dict[str, Any]:
    """What a probe of `region` may do: take its region's jobs, on the region subject and
    on its kind subjects, in the region's queue group (a plain subscription, which would
    copy every job, is refused), hear the replies to its own requests (JetStream
    acknowledgements), publish its region's results and heartbeats. A credential issued
    before the kind subjects lacks them: its probe takes every job on the region subject."""
    return {
        "pub": {"allow": [subjects.results(region), subjects.heartbeat(region)]},
        "sub": {
            "allow": [
                f"{subjects.jobs(region)} {subjects.jobs_queue(region)}",
                f"{subjects.jobs_kinds(region)} {subjects.jobs_queue(region)}",
                f"{natscreds.probe_inbox_prefix(probe_id)}.>",
            ]
        },
    }


# ---------------------------------------------------------------- files


def _read_seed(path: Path) -> nkeys.KeyPair:
    try:
        return nkeys.from_seed(bytearray(path.read_bytes().strip()))
    except FileNotFoundError:
        raise TrustError(f"{path} is missing: {_RUN_INIT}") from None
    except (OSError, nkeys.NkeysError) as e:
        raise TrustError(f"{path}: not a valid nkey seed ({e!r})") from None


def _seed_file(path: Path, prefix: int) -> nkeys.KeyPair:
    """The nkey in `path`, made (0600) when missing."""
    if path.exists():
        return _read_seed(path)
    kp = _keypair(prefix)
    natscreds.write_secret(path, kp.seed.decode() + "\n")
    return kp


def _pem_write(path: Path, data: bytes, *, secret: bool) -> None:
    if secret:
        natscreds.write_secret(path, data.decode())
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ensure_ca(trust_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = trust_dir / "ca.pem", trust_dir / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probefleet fleet CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _pem_write(key_path, _key_pem(key), secret=True)
    _pem_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return cert, key


def _san(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hostnames, *_DEFAULT_HOSTS]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _cert_fits(path: Path, hostnames: Sequence[str], ca: x509.Certificate) -> bool:
    """The server certificate exists, was signed by `ca`, names every host and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return (
        cert.issuer == ca.subject
        and set(_san(hostnames)) <= set(have)
        and left > dt.timedelta(days=_RENEW_DAYS)
    )


def _ensure_server_cert(trust_dir: Path, hostnames: Sequence[str]) -> None:
    ca, ca_key = _ensure_ca(trust_dir)
    cert_path, key_path = trust_dir / "server-cert.pem", trust_dir / "server-key.pem"
    if key_path.exists() and _cert_fits(cert_path, hostnames, ca):
        return
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    first = hostnames[0] if hostnames else "localhost"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(hostnames)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _pem_write(key_path, _key_pem(key), secret=True)
    _pem_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), secret=False)


def issue_client_cert(trust_dir: Path, name: str, out: Path) -> tuple[Path, Path]:
    """A client certificate for mutual TLS (CN `name`, client use only) from the fleet's CA:
    (out/<name>-cert.pem, out/<name>-key.pem, the key 0600). It only lets the client reach
    the server; the NATS credential still decides what it may do."""
    ca, ca_key = _ensure_ca(trust_dir)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}-cert.pem", out / f"{name}-key.pem"
    _pem_write(key_path, _key_pem(key), secret=True)
    _pem_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return cert_path, key_path


def _conf_string(value: str | Path) -> str:
    """A value for nats-server's config: its parser takes JSON's quoting."""
    return json.dumps(str(value), ensure_ascii=False)


def server_config(
    trust_dir: Path,
    *,
    resolver_dir: Path,
    tls: bool = True,
    verify_clients: bool = False,
    leafnode_listen: str | None = None,
    files_at: Path | None = None,
) -> str:
    """nats-server configuration for operator mode with the fleet's trust (no client listen
    address, no JetStream: the including file decides those). `resolver_dir` is where this
    server keeps the account JWTs it is sent; one per server. `verify_clients`: mutual TLS,
    clients must show a certificate from the fleet's CA. `leafnode_listen` (host:port): accept
    leaf nodes there, with the same TLS (a hub of remote regions). `files_at`: where the
    certificate files are on the server, when not in `trust_dir` (another host, a container)."""
    files = files_at or trust_dir
    operator = (trust_dir / "operator.jwt").read_text().strip()
    system = decode_jwt((trust_dir / "system.jwt").read_text())["sub"]
    preload = "\n".join(
        f"  {decode_jwt(jwt)['sub']}: {_conf_string(jwt)}"
        for jwt in (
            (trust_dir / "system.jwt").read_text().strip(),
            (trust_dir / "account.jwt").read_text().strip(),
        )
    )
    text = (
        "# The probefleet fleet's trust, made by `probefleet controller init-fleet`.\n"
        f"operator: {_conf_string(operator)}\n"
        f"system_account: {system}\n"
        "resolver: {\n"
        "  type: full\n"
        f"  dir: {_conf_string(resolver_dir)}\n"
        "  allow_delete: false\n"
        '  interval: "2m"\n'
        "}\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )

    def tls_block(verify: bool) -> str:
        return (
            "tls {\n"
            f"  cert_file: {_conf_string(files / 'server-cert.pem')}\n"
            f"  key_file: {_conf_string(files / 'server-key.pem')}\n"
            + (f"  ca_file: {_conf_string(files / 'ca.pem')}\n  verify: true\n" if verify else "")
            + "  timeout: 2\n"
            "}\n"
        )

    if tls:
        text += tls_block(verify_clients)
    if leafnode_listen:
        # Leaf nodes prove who they are with their credential; their TLS verifies the hub.
        inner = tls_block(False).replace("\n", "\n  ").rstrip() + "\n" if tls else ""
        text += f"leafnodes {{\n  listen: {_conf_string(leafnode_listen)}\n  {inner}}}\n"
    return text


def leaf_config(
    trust_dir: Path, *, hub_url: str, credentials: Path, system_credentials: Path, ca_file: Path
) -> str:
    """The `leafnodes` block of a region's leaf node: two remotes to the hub's leaf port, one
    for the probefleet account (`credentials`, from FleetTrust.issue_leaf) and one for the
    system account (`system_credentials`), over which the leaf hears account updates such as
    revocations. The leaf also needs `server_config` (same operator, its own resolver dir)."""
    account = decode_jwt((trust_dir / "account.jwt").read_text())["sub"]
    system = decode_jwt((trust_dir / "system.jwt").read_text())["sub"]

    def remote(creds: Path, acc: str) -> str:
        return (
            f"    {{ url: {_conf_string(hub_url)}, account: {acc}, credentials: {_conf_string(creds)},"
            f" tls: {{ ca_file: {_conf_string(ca_file)} }} }}\n"
        )

    return (
        "leafnodes {\n  remotes: [\n"
        + remote(credentials, account)
        + remote(system_credentials, system)
        + "  ]\n}\n"
    )


def write_leaf(
    trust: FleetTrust, out: Path, *, name: str, hub_url: str, files_at: Path, resolver_dir: Path
) -> None:
    """Everything a region's leaf node needs, in `out` (to copy to the leaf host, where it
    will be at `files_at`): leaf.conf (operator mode, TLS for its local probes with the
    fleet's server certificate, the two remotes to the hub), a leaf credential, the system
    account's credential (account updates, such as revocations, reach the leaf over it), the
    CA and the server certificate and key (issue it with the leaf's host name among
    `init-fleet --hostname`s)."""
    trust_dir = trust.trust_dir
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    seed, public = natscreds.new_user_keypair()
    natscreds.write_creds(out / "leaf.creds", trust.issue_leaf(public_key=public, name=name), seed)
    for file in ("system.creds", "server-key.pem"):
        natscreds.write_secret(out / file, (trust_dir / file).read_text())
    for file in ("ca.pem", "server-cert.pem"):
        (out / file).write_text((trust_dir / file).read_text())
    conf = (
        f"# The leaf node of region {name}, made by `probefleet controller init-leaf`.\n"
        + server_config(trust_dir, resolver_dir=resolver_dir, files_at=files_at)
        + leaf_config(
            trust_dir,
            hub_url=hub_url,
            credentials=files_at / "leaf.creds",
            system_credentials=files_at / "system.creds",
            ca_file=files_at / "ca.pem",
        )
    )
    (out / "leaf.conf").write_text(conf)


# ---------------------------------------------------------------- generate


def generate(
    trust_dir: Path,
    *,
    hostnames: Sequence[str] = (),
    resolver_dir: Path | None = None,
    account_name: str = ACCOUNT_NAME,
    leafnode_listen: str | None = None,
    mutual_tls: bool = False,
) -> None:
    """Make what is missing in `trust_dir` (see the module docstring) and keep what exists:
    running it again re-uses every key, so credentials already issued stay valid. The server
    certificate names `hostnames` plus localhost, 127.0.0.1 and ::1; it is re-issued (same CA)
    when a name is missing from it or it expires within 30 days. `leafnode_listen`: the
    generated nats-server.conf also takes leaf nodes of remote regions there (host:port).
    `mutual_tls`: clients must also show a certificate from the fleet's CA; the controller's is
    made (controller-cert.pem), probes get theirs from `issue_client_cert`. Once on, it stays
    on when `generate` runs again."""
    trust_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(trust_dir, 0o700)
    operator = _seed_file(trust_dir / "operator.nk", nkeys.PREFIX_BYTE_OPERATOR)
    system = _seed_file(trust_dir / "system.nk", nkeys.PREFIX_BYTE_ACCOUNT)
    account = _seed_file(trust_dir / "account.nk", nkeys.PREFIX_BYTE_ACCOUNT)
    signing = _seed_file(trust_dir / "account-signing.nk", nkeys.PREFIX_BYTE_ACCOUNT)
    # The system account signs its own user (it has no signing key); so does the probefleet
    # account's signing key for the controller and for every probe.
    if not (trust_dir / "system.jwt").exists():
        claims = _account_claims(
            _public(system), SYSTEM_ACCOUNT_NAME, signing_keys=[], jetstream=False, revocations={}
        )
        (trust_dir / "system.jwt").write_text(encode_jwt(claims, operator) + "\n")
    if not (trust_dir / "account.jwt").exists():
        claims = _account_claims(
            _public(account), account_name, signing_keys=[_public(signing)], jetstream=True, revocations={}
        )
        (trust_dir / "account.jwt").write_text(encode_jwt(claims, operator) + "\n")
    if not (trust_dir / "operator.jwt").exists():
        claims = {
            "iat": int(time.time()),
            "name": "probefleet",
            "sub": _public(operator),
            "nats": {"system_account": _public(system), "type": "operator", "version": 2},
        }
        (trust_dir / "operator.jwt").write_text(encode_jwt(claims, operator) + "\n")
    if not (trust_dir / "system.creds").exists():
        seed, public = natscreds.new_user_keypair()
        claims = _user_claims(public, "system", account=_public(system), permissions={})
        natscreds.write_creds(trust_dir / "system.creds", encode_jwt(claims, system), seed)
    if not (trust_dir / "controller.creds").exists():
        _write_user(trust_dir / "controller.creds", "controller", account, signing, permissions={})
    _ensure_server_cert(trust_dir, list(hostnames))
    mutual_tls = mutual_tls or (trust_dir / "controller-cert.pem").exists()
    if mutual_tls and not (trust_dir / "controller-key.pem").exists():
        issue_client_cert(trust_dir, "controller", trust_dir)
    conf = server_config(
        trust_dir,
        resolver_dir=resolver_dir or trust_dir / "resolver",
        leafnode_listen=leafnode_listen,
        verify_clients=mutual_tls,
    )
    (trust_dir / "nats-server.conf").write_text(conf)
    for name in _SECRET_FILES:
        os.chmod(trust_dir / name, 0o600)
    for name in _OPTIONAL_SECRET_FILES:
        if (trust_dir / name).exists():
            os.chmod(trust_dir / name, 0o600)


def _write_user(
    path: Path, name: str, account: nkeys.KeyPair, signing: nkeys.KeyPair, *, permissions: dict[str, Any]
) -> None:
    seed, public = natscreds.new_user_keypair()
    claims = _user_claims(public, name, account=_public(account), permissions=permissions)
    natscreds.write_creds(path, encode_jwt(claims, signing), seed)


# ---------------------------------------------------------------- FleetTrust


@dataclass
class FleetTrust:
    """The trust a controller holds: signs probe credentials, pushes revocations."""

    trust_dir: Path
    account_public_key: str
    nats_urls: list[str]
    ca_pem: str | None
    connect_url: str
    tls_ca: Path | None
    # The client certificate of mutual TLS, when the servers ask for one.
    tls_cert: Path | None
    tls_key: Path | None
    _operator: nkeys.KeyPair = field(repr=False)
    _signing: nkeys.KeyPair = field(repr=False)
    _account_claims: dict[str, Any] = field(repr=False)
    _last_iat: int = field(default=0, repr=False)
    _push_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def load(
        cls,
        trust_dir: Path,
        *,
        nats_urls: Sequence[str],
        connect_url: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> FleetTrust:
        """The trust in `trust_dir` (TrustError when it is missing or incomplete). `nats_urls`:
        the URLs probes are told to connect to; `connect_url`: where this controller pushes
        account updates (its own NATS URL; the first of `nats_urls` when not given); `tls_ca`:
        the CA of that server's certificate (default: the trust's own ca.pem); `tls_cert`,
        `tls_key`: a client certificate for mutual TLS (default: the trust's controller-cert.pem
        and controller-key.pem when there are)."""
        if not trust_dir.is_dir():
            raise TrustError(
                f"no fleet trust directory at {trust_dir}: run `probefleet controller init-fleet`"
            )
        if not nats_urls:
            raise TrustError("no NATS URL to tell probes")
        try:
            account_jwt = (trust_dir / "account.jwt").read_text().strip()
            ca_pem = (trust_dir / "ca.pem").read_text() if (trust_dir / "ca.pem").exists() else None
        except OSError as e:
            raise TrustError(f"{trust_dir}: {e.strerror} ({e.filename})") from None
        if not (trust_dir / "system.creds").exists():
            raise TrustError(
                f"{trust_dir / 'system.creds'} is missing: run `probefleet controller init-fleet`"
            )
        operator = _read_seed(trust_dir / "operator.nk")
        signing = _read_seed(trust_dir / "account-signing.nk")
        claims = decode_jwt(account_jwt)
        if _public(signing) not in claims.get("nats", {}).get("signing_keys", []):
            raise TrustError(f"{trust_dir}: account-signing.nk is not a signing key of account.jwt")
        return cls(
            trust_dir=trust_dir,
            account_public_key=str(claims["sub"]),
            nats_urls=list(nats_urls),
            ca_pem=ca_pem,
            connect_url=connect_url or nats_urls[0],
            tls_ca=tls_ca or ((trust_dir / "ca.pem") if ca_pem is not None else None),
            tls_cert=tls_cert or _existing(trust_dir / "controller-cert.pem"),
            tls_key=tls_key or _existing(trust_dir / "controller-key.pem"),
            _operator=operator,
            _signing=signing,
            _account_claims=claims,
            # Above the preloaded JWT's too: a server that restarts keeps what it was sent only
            # when that is newer than the preload in its configuration.
            _last_iat=int(claims.get("iat", 0)),
        )

    def issue_probe(self, *, public_key: str, probe_id: str, region: str) -> str:
        """A user JWT for the probe holding `public_key`: its region's subjects only, no expiry
        (revocation ends it). ValueError for a key that is not a user public key or a bad region."""
        if not _valid_user_key(public_key):
            raise ValueError("public_key: not an nkey user public key (U...)")
        if not subjects.valid_region(region):
            raise ValueError(f"region {region!r}: use lower-case letters, digits and dashes")
        claims = _user_claims(
            public_key,
            probe_id,
            account=self.account_public_key,
            permissions=probe_permissions(region, probe_id),
        )
        claims["nats"]["tags"] = [f"region:{region}"]
        return encode_jwt(claims, self._signing)

    def issue_leaf(self, *, public_key: str, name: str) -> str:
        """A user JWT for a leaf node's remote connection into the probefleet account (a
        region's own NATS server that its probes connect to). It carries the region's traffic
        both ways, so it may do what the account may; each probe behind the leaf still has its
        own credential, checked by the leaf server against the same account."""
        if not _valid_user_key(public_key):
            raise ValueError("public_key: not an nkey user public key (U...)")
        claims = _user_claims(public_key, f"leaf {name}", account=self.account_public_key, permissions={})
        return encode_jwt(claims, self._signing)

    def system_account(self) -> str:
        return str(decode_jwt((self.trust_dir / "system.jwt").read_text())["sub"])

    def account_jwt(self, revoked: Mapping[str, int]) -> str:
        """The account JWT with `revoked` (user public key -> unix seconds: user JWTs issued
        at or before are refused) as its whole revocation list."""
        claims = json.loads(json.dumps(self._account_claims))
        claims.pop("jti", None)
        nats_claims = claims["nats"]
        nats_claims.pop("revocations", None)
        if revoked:
            nats_claims["revocations"] = {k: int(v) for k, v in sorted(revoked.items())}
        # A later iat for every update: a server keeps the account JWT it has when the one
        # sent is not newer (and prefers its preload at a tie when it restarts), so two pushes
        # within one second, or one in the second of `generate`, must not carry the same iat.
        self._last_iat = max(int(time.time()), self._last_iat + 1)
        claims["iat"] = self._last_iat
        return encode_jwt(claims, self._operator)

    async def push_revocations(self, revoked: Mapping[str, int]) -> None:
        """Send the account JWT with exactly `revoked` as its revocation list to NATS (the full
        list every time, rebuilt by the caller: idempotent, and two controllers cannot undo each
        other). The servers close the revoked users' connections when they take it. TrustError
        when NATS is unreachable or refuses the update."""
        async with self._push_lock:
            token = self.account_jwt(revoked)
            options = natscreds.connect_options(
                self.trust_dir / "system.creds",
                self.tls_ca,
                url=self.connect_url,
                cert_file=self.tls_cert,
                key_file=self.tls_key,
            )
            try:
                nc = await nats.connect(
                    self.connect_url,
                    name="probefleet-trust",
                    allow_reconnect=False,
                    connect_timeout=_PUSH_TIMEOUT,
                    **options,
                )
            except (OSError, TimeoutError, nats.errors.Error) as e:
                raise TrustError(f"cannot reach NATS to push the account update: {e!r}") from None
            try:
                reply = await nc.request(_CLAIMS_UPDATE, token.encode(), timeout=_PUSH_TIMEOUT)
            except (TimeoutError, nats.errors.Error) as e:
                raise TrustError(f"NATS did not take the account update: {e!r}") from None
            finally:
                await nc.close()
            _check_update_reply(reply.data)


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _check_update_reply(data: bytes) -> None:
    try:
        answer = json.loads(data)
    except ValueError:
        raise TrustError(f"NATS answered the account update with {data[:200]!r}") from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error:
        raise TrustError(f"NATS refused the account update: {error.get('description', error)}")


def _valid_user_key(key: str) -> bool:
    if not key.startswith("U") or len(key) != 56:
        return False
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except ValueError:
        return False
    return len(raw) == 35 and bytes(nkeys.crc16_checksum(bytearray(raw[:-2]))) == raw[-2:]
