"""`probefleet dev`, run for real: it refuses before starting anything (a taken port, a data
directory in use), starts on free ports beside another dev, tells its own controller from
another server, and runs README.md's local tryout of notifications and status pages with
its catchers, the README's own shell blocks fed to bash."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncpg
import click
import msgspec
import pytest

from probefleet.controller.dev.command import wait_up
from probefleet.shared.devstack import free_port, reachable_dir
from tests.helpers import eventually

REPO = Path(__file__).resolve().parent.parent
TRYOUT = "## Trying notifications and status pages locally"
BOUND = 60.0  # generous bound for "arrives": a failure, never a speed measure


class Output:
    """A child's output lines, read by a thread, so that every wait on them has a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = BOUND) -> re.Match[str]:
        """The first line so far or to come matching `pattern`."""
        regex, seen = re.compile(pattern), 0
        deadline = time.monotonic() + timeout
        while True:
            for seen_line in self.lines[seen:]:
                if m := regex.search(seen_line):
                    return m
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self.ended:
                tail = "\n".join(self.lines[-30:])
                raise AssertionError(
                    f"no line matching {pattern!r} ({'ended' if self.ended else 'timeout'}):\n{tail}"
                )
            with contextlib.suppress(queue.Empty):
                line = self._queue.get(timeout=left)
                if line is None:
                    self.ended = True
                else:
                    self.lines.append(line)


@dataclass
class Dev:
    data_dir: Path
    proc: subprocess.Popen[str]
    log: Output
    port: int = 0
    key: str = ""
    webhook_port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _dev_argv(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "probefleet.shared.cli", "dev", "--data-dir", str(data_dir), *args]


def _env() -> dict[str, str]:
    """The test runner's environment without PROBEFLEET_* settings, as a new shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBEFLEET_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def running_dev(data_dir: Path, *args: str) -> Iterator[Dev]:
    """dev up (its banner read), then SIGTERM: exit 0 and no process left naming `data_dir`."""
    proc = subprocess.Popen(
        _dev_argv(data_dir, *args),
        cwd=REPO,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    dev = Dev(data_dir, proc, Output(proc.stdout))
    try:
        dev.port = int(dev.log.wait_for(r"^probefleet is up in \S+: http://127\.0\.0\.1:(\d+)$").group(1))
        dev.webhook_port = int(dev.log.wait_for(r"^  webhook catcher http://127\.0\.0\.1:(\d+)/$").group(1))
        dev.key = dev.log.wait_for(r"^  admin API key.*: (pf_\S+)").group(1)
        yield dev
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        leftovers = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True).stdout
        # dev keeps its data between runs; this test's copy goes.
        shutil.rmtree(reachable_dir(data_dir / "postgres").parent, ignore_errors=True)
    assert code == 0, "\n".join(dev.log.lines[-30:])
    assert leftovers.strip() == ""


async def _settings(dsn: str, *names: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval(f"SHOW {name}") for name in names]
    finally:
        await conn.close()


def _refused(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A dev that must stop at once: exit 2, a message and no traceback on stderr, nothing on stdout."""
    done = subprocess.run(
        _dev_argv(data_dir, *args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 2, done
    assert done.stdout == "" and "Traceback" not in done.stderr and done.stderr.startswith("Error: ")
    return done


def _get(url: str, key: str | None = None, body: Mapping[str, object] | None = None) -> tuple[int, str]:
    """(status, text) of a GET, or of a POST of `body` as JSON."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@contextlib.contextmanager
def answering(routes: dict[str, tuple[int, bytes]]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that is not probefleet: `routes[path]`, else 200 "ok"."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (200, b"ok"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_it_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    with answering({}) as taken:
        assert _get(f"http://127.0.0.1:{taken}/api/v1/health") == (200, "ok")
        started = time.monotonic()
        done = _refused(data_dir, "--port", str(taken))
        assert f"cannot use port {taken} on 127.0.0.1 for the controller" in done.stderr
        assert "--port 0" in done.stderr
        done = _refused(data_dir, "--port", str(free_port()), "--webhook-port", str(taken))
        assert f"port {taken} on 127.0.0.1 for the webhook catcher" in done.stderr
        assert "--webhook-port 0" in done.stderr
        assert time.monotonic() - started < 10
    assert not data_dir.exists(), "nothing written"
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).returncode == 1


def test_it_tells_its_own_controller_from_another_server_on_its_port() -> None:
    """A server that took the port between dev's check and its controller's start answers
    health; the admin request with dev's key shows it is not dev's controller."""
    other = json.dumps({"data": {"controller_id": "someone-else"}}).encode()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for routes, said in (
            ({"/api/v1/health/details": (401, b'{"error": {}}')}, "got HTTP 401"),
            ({"/api/v1/health/details": (200, other)}, "got controller 'someone-else'"),
        ):
            with answering(routes) as port, pytest.raises(click.ClickException) as refused:
                wait_up(f"http://127.0.0.1:{port}", "pf_key", "dev-mine", alive, timeout=10)
            assert refused.value.message.startswith(f"another server answers on http://127.0.0.1:{port}")
            assert said in refused.value.message and "'dev-mine'" in refused.value.message
    finally:
        alive.kill()
        alive.wait()
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    gone.wait()
    with answering({}) as port, pytest.raises(click.ClickException, match="exited with code 3"):
        wait_up(f"http://127.0.0.1:{port}", "pf_key", "dev-mine", gone, timeout=10)


class Shell:
    """One bash session fed README blocks as a terminal would be: variables outlive a block."""

    def __init__(self, cwd: Path) -> None:
        # `python3` in the README is this venv's.
        env = {**_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=cwd,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.out = Output(self.proc.stdout)

    def run(self, block: str) -> list[str]:
        """The block's output lines; it must end with status 0."""
        marker = f"done-{secrets.token_hex(4)}"
        start = len(self.out.lines)
        # curl prints no final newline: `echo` ends its line before the marker.
        self.stdin.write(f"{block}\necho; echo {marker} $?\n")
        self.stdin.flush()
        m = self.out.wait_for(rf"^{marker} (\d+)$", 30)
        lines = self.out.lines[start : self.out.lines.index(m.string)]
        assert m.group(1) == "0", lines
        return [line for line in lines if line]

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(10)


def _tryout(dev: Dev) -> list[str]:
    """The README section's shell blocks, aimed at this dev (its ports and data directory)."""
    section = (REPO / "README.md").read_text().split(TRYOUT, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)
    assert len(blocks) == 2, blocks
    aimed = []
    for block in blocks:
        for readme, here in (
            ("127.0.0.1:8080", f"127.0.0.1:{dev.port}"),
            ("127.0.0.1:8081", f"127.0.0.1:{dev.webhook_port}"),
            (".probefleet/", f"{dev.data_dir}/"),
        ):
            block = block.replace(readme, here)
        aimed.append(block)
    text = "".join(blocks)
    assert all(s in text for s in ("127.0.0.1:8080", "127.0.0.1:8081/", ".probefleet/admin.key"))
    return aimed


def test_it_runs_the_readme_tryout_with_its_catchers_beside_a_second_dev(tmp_path: Path) -> None:
    # a on a port given (b on --port 0): dev runs the whole system, a monitor of its own
    # health goes up, checked from its three regions, while the tryout runs.
    # (its webhook catcher on any free port: --port's default neighbour may be taken)
    with running_dev(tmp_path / "a", "--port", str(free_port()), "--webhook-port", "0") as a:
        status, body = _get(
            f"{a.base}/api/v1/monitors",
            a.key,
            {"name": "self", "url": f"{a.base}/api/v1/health", "check_interval": 1},
        )
        assert status == 201, body
        own = json.loads(body)["data"]["id"]
        # One data directory, one dev: the second stops at once, saying so (not that the
        # port is taken, as it also is: `make dev` twice in one clone).
        for port in (str(a.port), "0"):
            done = _refused(a.data_dir, "--port", port)
            assert f"another probefleet dev is using {a.data_dir} (pid {a.proc.pid})" in done.stderr
        # A second clone on the same port says why it cannot start.
        done = _refused(tmp_path / "b", "--port", str(a.port))
        assert f"cannot use port {a.port}" in done.stderr and "--port 0" in done.stderr
        assert _get(f"{a.base}/api/v1/monitors?limit=1", a.key)[0] == 200
        # What dev keeps between runs survives a crash of the machine: its PostgreSQL is durable.
        dsn = a.log.wait_for(r"PostgreSQL (postgresql://\S+)$").group(1)
        assert asyncio.run(_settings(dsn, "fsync", "synchronous_commit", "full_page_writes")) == ["on"] * 3

        shell = Shell(tmp_path)
        first, then = _tryout(a)
        out = shell.run(first)
        assert json.loads(out[-1])["data"] == {"kind": "email", "confirmed": False}, out
        assert re.fullmatch(r"ids \d+ \d+ \d+", shell.run('echo "ids $CHANNEL $MONITOR $PAGE"')[0])

        hook = a.log.wait_for(r"^webhook POST / (\{.*\})$")
        event = json.loads(hook.group(1))
        assert (event["event"], event["monitor"]["name"]) == ("incident.opened", "broken")
        a.log.wait_for(r"^mail to=me@example\.com subject=Confirm your subscription to Local$")
        link = a.log.wait_for(r"^  (http://127\.0\.0\.1:(\d+)/status/local/confirm\?token=\S+)$")
        assert int(link.group(2)) == a.port, "the link points at this dev's controller"
        mails = list((a.data_dir / "mail").glob("*.eml"))
        assert len(mails) == 1 and b"Subject: Confirm your subscription to Local" in mails[0].read_bytes()
        status, page = _get(link.group(1))
        assert status == 200 and "Subscribed" in page
        subscribers = json.loads(shell.run(then)[-1])["data"]
        assert [(s["address"], s["confirmed"]) for s in subscribers] == [("me@example.com", True)]
        shell.close()

        async def own_up() -> bool:
            status, body = await asyncio.to_thread(_get, f"{a.base}/api/v1/monitors/{own}", a.key)
            return status == 200 and json.loads(body)["data"]["status"] == "up"

        asyncio.run(eventually(own_up, timeout=60, what="monitor 'self' up"))
        status, body = _get(f"{a.base}/api/v1/monitors/{own}/results?limit=50", a.key)
        assert {r["region"] for r in json.loads(body)["data"]} == {"us-east", "eu-west", "ap-south"}

        # Another clone with --port 0 runs beside it: its own ports, database and key. Its
        # --config file names an SMTP server (a's mail catcher: b starts none) and a database
        # (dev's own wins), and refuses loopback channels (the file wins over dev's default).
        smtp = int(a.log.wait_for(r"^  mail catcher smtp://127\.0\.0\.1:(\d+) ").group(1))
        config = tmp_path / "b.toml"
        config.write_text(
            'database_url = "postgresql://nobody@127.0.0.1:9/elsewhere"\n'
            f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp}\nsmtp_security = "none"\n'
            "notification_channels_allow_private = false\n"
        )
        with running_dev(tmp_path / "b", "--port", "0", "--config", str(config)) as b:
            assert len({a.port, a.webhook_port, b.port, b.webhook_port}) == 4
            status, body = _get(f"{b.base}/api/v1/monitors", b.key)
            assert status == 200 and json.loads(body)["data"] == []
            assert _get(f"{b.base}/api/v1/monitors", a.key)[0] == 401
            b.log.wait_for(rf"^note: {re.escape(str(config))} sets database_url; dev uses its own NATS")
            b.log.wait_for(rf"^  mail: 127\.0\.0\.1:{smtp} as configured \(no mail catcher\)$")
            assert not (b.data_dir / "mail").exists()
            catcher = f"http://127.0.0.1:{b.webhook_port}/"
            channel = {"name": "catcher", "kind": "webhook", "config": {"url": catcher}}
            status, body = _get(f"{b.base}/api/v1/notification-channels", b.key, channel)
            assert status == 422 and "config.url" in json.loads(body)["error"]["details"]
            assert _get(f"{b.base}/api/v1/status-pages", b.key, {"name": "Bee", "slug": "bee"})[0] == 201
            subscribe = f"{b.base}/api/v1/status-pages/bee/subscribe"
            assert _get(subscribe, None, {"webhook_url": catcher})[0] == 202, (
                "loopback subscribers: dev's default"
            )
            assert _get(subscribe, None, {"email": "bee@example.com"})[0] == 202
            a.log.wait_for(r"^mail to=bee@example\.com subject=Confirm your subscription to Bee$")


def test_it_runs_the_secure_path_a_credential_per_probe(tmp_path: Path) -> None:
    """NATS with TLS and auth, the trust made in the data directory, each probe enrolled with
    a token for its own credential and region: what `make dev` runs is what users run."""
    import nats

    from probefleet.controller.cluster.trust import decode_jwt
    from probefleet.shared import natscreds, subjects, wire
    from probefleet.shared.natscreds import read_creds_jwt

    data_dir = tmp_path / "d"
    trust_dir = data_dir / "trust"
    regions = {"us-east", "eu-west", "ap-south"}

    async def live_probes(url: str) -> set[tuple[str, str]]:
        ca = trust_dir / "ca.pem"
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(url, allow_reconnect=False, **natscreds.connect_options(None, ca))
        nc = await nats.connect(url, **natscreds.connect_options(trust_dir / "controller.creds", ca))
        seen: set[tuple[str, str]] = set()
        sub = await nc.subscribe(subjects.heartbeat_all())
        try:
            deadline = time.monotonic() + BOUND
            while {r for _, r in seen} != regions and time.monotonic() < deadline:
                msg = await sub.next_msg(timeout=BOUND)
                hb = msgspec.msgpack.decode(msg.data, type=wire.ProbeHeartbeat)
                seen.add((hb.probe_id, hb.region))
        finally:
            await nc.close()
        return seen

    with running_dev(data_dir, "--port", "0") as dev:
        url = dev.log.wait_for(r"^  NATS (tls://127\.0\.0\.1:\d+) \(TLS").group(1)
        live = asyncio.run(live_probes(url))
        assert not any("insecure NATS" in line for line in dev.log.lines)
    assert {r for _, r in live} == regions
    for probe_id, region in live:
        state = json.loads((data_dir / "probes" / region / "probe.json").read_text())
        assert state["probe_id"] == probe_id and state["region"] == region
    users = set()
    for region in regions:
        creds = data_dir / "probes" / region / "nats.creds"
        assert creds.stat().st_mode & 0o777 == 0o600
        claims = decode_jwt(read_creds_jwt(creds))
        assert claims["nats"]["pub"]["allow"] == [subjects.results(region), subjects.heartbeat(region)]
        users.add(claims["sub"])
    assert len(users) == 3
