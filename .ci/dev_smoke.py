"""CI smoke test of the README's `make dev`, as a new user would run it.

Clones this repository into a 0700 folder whose path has a space in it, runs `make dev`
there (which builds its own venv from the lock, so nothing of the developer's venv or
pip cache is reused when PIP_NO_CACHE_DIR is set), and checks: health answers, the
printed admin key works (and no key is refused), an HTTP monitor in three regions goes
up with a result from each region, and Ctrl-C stops the whole stack with no process left.

    python3 .ci/dev_smoke.py                 # as the current user (root in CI)
    python3 .ci/dev_smoke.py --user nobody   # as a normal user (needs root to switch)

Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGIONS = ["us-east", "eu-west", "ap-south"]
INSTALL_TIMEOUT = 900  # a venv from the lock with no pip cache: about 1-2 minutes here
CHECK_TIMEOUT = 60


def fail(msg: str) -> None:
    raise SystemExit(f"dev smoke: FAILED: {msg}")


def call(method: str, url: str, key: str | None = None, body: object = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}


def until(what: str, timeout: float, probe):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.3)
    fail(f"{what} not within {timeout:.0f} s")


def clone(user: str | None) -> tuple[Path, Path]:
    top = Path(tempfile.mkdtemp(prefix="pf-smoke-"))  # mode 0700
    checkout = top / "probe fleet"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(checkout)], check=True)
    if user:
        pw = pwd.getpwnam(user)
        for p in [top, *top.rglob("*")]:
            os.lchown(p, pw.pw_uid, pw.pw_gid)
    assert top.stat().st_mode & 0o777 == 0o700
    return top, checkout


def start(checkout: Path, top: Path, user: str | None) -> subprocess.Popen[str]:
    # The clone's own .venv, as a new user gets it: nothing of the caller's make or venv.
    inherited = ("PROBEFLEET_", "VENV", "PYTHON", "MAKE", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = ["make", "dev"]
    if user:
        pw = pwd.getpwnam(user)
        env.update(HOME=str(top), USER=user, LOGNAME=user)
        # The developer's Python may sit under /root (0700): a normal user takes the system one.
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith("/root"))
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd]
    return subprocess.Popen(
        cmd,
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def read_banner(proc: subprocess.Popen[str]) -> tuple[str, str]:
    assert proc.stdout is not None
    base = key = ""
    deadline = time.monotonic() + INSTALL_TIMEOUT
    while time.monotonic() < deadline and not key:
        line = proc.stdout.readline()
        if not line:
            fail(f"make dev exited with {proc.wait()} before it was up")
        print("  |", line.rstrip())
        if m := re.search(r"probefleet is up .*?(http://\S+)", line):
            base = m.group(1)
        if "admin API key" in line:
            key = line.split(": ", 1)[1].split()[0]
    if not (base and key):
        fail("no 'probefleet is up' line with an admin key")
    return base, key


def first_monitor(checkout: Path) -> None:
    """The README's "A first monitor" commands, run as they are shown."""
    readme = (checkout / "README.md").read_text()
    block = re.search(r"## A first monitor.*?```sh\n(.*?)```", readme, re.S)
    if not block:
        fail("README.md has no 'A first monitor' commands")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print("".join(f"  > {line}\n" for line in done.stdout.splitlines()), end="")
    answers, text, decoder = [], done.stdout.strip(), json.JSONDecoder()
    while text:  # curl prints each answer without a newline after it
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].strip()
    if done.returncode != 0 or len(answers) != 3:
        fail(f"the README's first-monitor commands: exit {done.returncode}, {done.stderr[-500:]}")
    created, got, results = (a["data"] for a in answers)
    if (created["id"], created["status"]) != (1, "pending") or (got["id"], got["status"]) != (1, "up"):
        fail("the README's first monitor is not created pending and then up, as the README shows")
    if not results or {r["region"] for r in results} - set(REGIONS):
        fail("the README's first monitor has no results from the three regions")


def exercise(base: str, key: str) -> None:
    status, _ = call("GET", f"{base}/api/v1/health")
    if status != 200:
        fail(f"health answered {status}")
    if call("GET", f"{base}/api/v1/monitors", None)[0] != 401:
        fail("the API answered without a key")
    if call("GET", f"{base}/api/v1/monitors", key)[0] != 200:
        fail("the printed admin key does not work")
    status, created = call(
        "POST",
        f"{base}/api/v1/monitors",
        key,
        {"name": "smoke", "url": f"{base}/api/v1/health", "check_interval": 2, "locations": REGIONS},
    )
    if status != 201:
        fail(f"creating a monitor answered {status}")
    mid = created["data"]["id"]

    def up() -> bool:
        return call("GET", f"{base}/api/v1/monitors/{mid}", key)[1]["data"]["status"] == "up"

    until("the monitor up", CHECK_TIMEOUT, up)

    def three_regions() -> bool:
        rows = call("GET", f"{base}/api/v1/monitors/{mid}/results?limit=50", key)[1]["data"]
        return {r["region"] for r in rows if r["is_ok"]} == set(REGIONS)

    until("an ok result from each region", CHECK_TIMEOUT, three_regions)


def stop(proc: subprocess.Popen[str], places: list[str]) -> None:
    """Ctrl-C, then no process may name the clone or a stand-in folder it made."""
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        fail("make dev did not stop within 60 s of Ctrl-C")
    print("".join(f"  | {line}\n" for line in out.splitlines()), end="")

    def gone() -> bool:
        return all(subprocess.run(["pgrep", "-f", p], capture_output=True).returncode == 1 for p in places)

    until("every process of the stack gone", 15, gone)


def stand_ins_of(checkout: Path, folders: set[Path]) -> list[Path]:
    """The folders among `folders` (made under /var/tmp during the run) that this clone's
    stack made: the copy of PostgreSQL's binaries from its venv (its .complete names the
    source) and the stand-in of its data folder (named by the path, shared/devstack.py
    `reachable_dir`). Other sessions' tests make such folders at the same time, with
    servers of their own running from them; those are not this stack's leftovers."""
    data = (checkout / ".probefleet" / "postgres").resolve()
    data_stand_in = f"probefleet-{hashlib.sha1(str(data).encode()).hexdigest()[:12]}"
    ours = []
    for folder in folders:
        complete = folder / ".complete"
        try:
            source = complete.read_text() if complete.is_file() else ""
        except OSError:
            source = ""
        if folder.name == data_stand_in or str(checkout) in source:
            ours.append(folder)
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", help="run make dev as this user (the caller must be root)")
    args = parser.parse_args()
    before = set(Path("/var/tmp").glob("probefleet-*"))
    top, checkout = clone(args.user)
    who = args.user or pwd.getpwuid(os.geteuid()).pw_name
    print(f"dev smoke: make dev as {who} in {checkout!s}")
    started = time.monotonic()
    proc = start(checkout, top, args.user)
    try:
        base, key = read_banner(proc)
        print(f"dev smoke: up after {time.monotonic() - started:.0f} s (venv from the lock included)")
        if base != "http://127.0.0.1:8080":
            fail(f"make dev is not on the README's address: {base}")
        first_monitor(checkout)
        exercise(base, key)
        made = stand_ins_of(checkout, set(Path("/var/tmp").glob("probefleet-*")) - before)
        stop(proc, [str(top), *map(str, made)])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)
        for made in stand_ins_of(checkout, set(Path("/var/tmp").glob("probefleet-*")) - before):
            shutil.rmtree(made, ignore_errors=True)
    print(f"dev smoke: passed as {who} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
