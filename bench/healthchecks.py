"""Healthchecks as bench/heartbeat_pings.py's peer (`--peer healthchecks`): its own ping
endpoint on its own PostgreSQL, driven with the same wrk load and counted the same way.

Healthchecks (a Django project, healthchecks/healthchecks on GitHub) is not part of this
repository and is never fetched by it: the bench runs the release installed under
$PROBEFLEET_HEALTHCHECKS_DIR (default /var/tmp/healthchecks; `PROVIDE` says how), which
`python -m bench.healthchecks setup` prepares from an unpacked release:

    python -m bench.healthchecks setup [--git-dir <bare clone> [--tag v4.3]] [--python python3.12]

One run (`run`): a fresh embedded PostgreSQL (devstack.PostgresServer, durable as
probefleet's, its data dir and port its own, under the install folder), `manage.py
migrate`, N checks created through Healthchecks' ORM (`manage.py shell`), then gunicorn
(a production server its README names) with one worker per core serving hc.wsgi, and
`manage.py sendalerts`, the daemon its reference deployment runs beside the web server to
turn late checks into alerts (probefleet's controller does that job in its own process, so
it is counted on both sides). CPU is bench.common.tree_cpu of gunicorn's master (its
workers included), of sendalerts and of the postmaster (every backend, live or reaped);
memory is RSS and PSS of those trees. Pings stored are the sum of the checks' n_pings
(Healthchecks may prune old ping rows, the counter it keeps per check is exact).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import click

from bench.common import stop_processes
from probefleet.shared import devstack

ENV = "PROBEFLEET_HEALTHCHECKS_DIR"
DEFAULT_DIR = "/var/tmp/healthchecks"
WORKERS = 2  # one per core of the 2-core machine
# gunicorn's threaded worker: requests overlap while one waits for its commit to reach the
# disk, and it keeps connections alive (the sync worker closes each one), as wrk's are and
# as the controller keeps them; 2 sync workers spent most of a run waiting on fsync.
THREADS = 4
# Persistent database connections (Django's CONN_MAX_AGE). Healthchecks' example
# environment ships 0, a new PostgreSQL backend per request; the bench gives it the cheaper
# setting, as probefleet's controller keeps a pool.
CONN_MAX_AGE = "600"
PROVIDE = f"""\
Set {ENV} (default {DEFAULT_DIR}) to a folder outside this repository holding a
Healthchecks release in src/ and its own virtualenv in venv/, for example:

  mkdir -p {DEFAULT_DIR}/src
  git --git-dir <a bare clone of github.com/healthchecks/healthchecks> archive v4.3 \\
    | tar -x -C {DEFAULT_DIR}/src
  .venv/bin/python -m bench.healthchecks setup

(`setup --git-dir <clone>` unpacks the newest release tag itself.) setup makes
{DEFAULT_DIR}/venv with Python 3.12 or newer (Healthchecks 4 needs Django 6; --python
names the interpreter), installs src/requirements.txt and gunicorn from PyPI into it, and
runs `manage.py check`. The bench never writes into src/: each run gets a fresh database
in a folder of its own under {DEFAULT_DIR}, removed afterwards."""


def root_dir() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_DIR)


def missing(root: Path) -> list[str]:
    """What an install at `root` lacks to be run by the bench, as paths under it."""
    needed = ["src/manage.py", "src/hc/wsgi.py", "venv/bin/python", "venv/bin/gunicorn"]
    return [p for p in needed if not (root / p).exists()]


def hc_dir() -> Path:
    """The install named by $PROBEFLEET_HEALTHCHECKS_DIR, checked before any run starts."""
    root = root_dir()
    lacking = missing(root)
    if lacking:
        raise click.UsageError(
            f"--peer healthchecks needs Healthchecks on this machine: {root} lacks"
            f" {', '.join(lacking)}.\n{PROVIDE}"
        )
    return root


def version(root: Path) -> str:
    """The release's version: the top entry of its CHANGELOG ("## v4.3 - 2026-...")."""
    with contextlib.suppress(OSError):
        for line in (root / "src" / "CHANGELOG.md").read_text().splitlines():
            if m := re.match(r"## (v[\d.]+)", line):
                return m.group(1)
    return "unknown version"


# ---------------------------------------------------------------- setup


def newest_tag(git_dir: Path) -> str:
    """The highest release tag (vX.Y[.Z]) of a clone."""
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "tag", "--sort=-v:refname"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tags = [t for t in out.split() if re.fullmatch(r"v\d+(\.\d+)+", t)]
    if not tags:
        raise click.UsageError(f"{git_dir} has no release tag (vX.Y)")
    return tags[0]


def find_python(given: str | None) -> str:
    """An interpreter of Python 3.12 or newer: `given`, else one on PATH or under pyenv."""
    candidates = [given] if given else []
    if not given:
        candidates += [shutil.which(n) or "" for n in ("python3.14", "python3.13", "python3.12")]
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        candidates += sorted((str(p) for p in pyenv.glob("3.1[2-9]*/bin/python3")), reverse=True)
    for c in candidates:
        if not c:
            continue
        probe = subprocess.run(
            [c, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return c
    raise click.UsageError(
        "Healthchecks needs Python 3.12 or newer and none was found"
        + (f" ({given} is not one)" if given else " (python3.12 on PATH, or pyenv)")
        + "; name one with --python"
    )


def hc_env(root: Path, port: int, db_port: int) -> dict[str, str]:
    """Healthchecks' settings (hc/settings.py reads them from the environment)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        "PATH": f"{root / 'venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SITE_ROOT": f"http://127.0.0.1:{port}",
        "DB": "postgres",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(db_port),
        "DB_NAME": "hc",
        "DB_USER": "postgres",
        "DB_PASSWORD": "",
        "DB_SSLMODE": "disable",
        "DB_CONN_MAX_AGE": CONN_MAX_AGE,
        "REGISTRATION_OPEN": "False",
        "EMAIL_HOST": "",
    }


def manage(root: Path, env: dict[str, str], *args: str, timeout: float = 600) -> str:
    res = subprocess.run(
        [str(root / "venv" / "bin" / "python"), "manage.py", *args],
        cwd=root / "src",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res.stdout


def setup(root: Path, git_dir: Path | None, tag: str | None, python: str | None) -> None:
    src = root / "src"
    if git_dir is not None:
        if not (git_dir / "HEAD").exists():
            raise click.UsageError(f"--git-dir {git_dir} is not a git directory (no HEAD in it)")
        tag = tag or newest_tag(git_dir)
        src.mkdir(parents=True, exist_ok=True)
        click.echo(f"unpacking {tag} into {src}")
        archive = subprocess.Popen(["git", "--git-dir", str(git_dir), "archive", tag], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise click.UsageError(f"git archive {tag} failed in {git_dir}")
    if not (src / "manage.py").exists() or not (src / "requirements.txt").exists():
        raise click.UsageError(
            f"No Healthchecks source in {src} (manage.py and requirements.txt expected).\n{PROVIDE}"
        )
    venv = root / "venv"
    if not (venv / "bin" / "python").exists():
        interpreter = find_python(python)
        click.echo(f"creating {venv} with {interpreter}")
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
    click.echo("installing requirements.txt and gunicorn from PyPI")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(src / "requirements.txt"), "gunicorn"], check=True)
    manage(root, hc_env(root, 8000, 5432), "check")
    click.echo(f"Healthchecks {version(root)} ready in {root}")


# ---------------------------------------------------------------- one run

SEED = """
from datetime import timedelta
from django.contrib.auth.models import User
from hc.accounts.models import Project
from hc.api.models import Check
user = User.objects.create_user("bench", "bench@example.org", None)
project = Project.objects.create(owner=user, name="bench")
checks = Check.objects.bulk_create(
    Check(project=project, name=f"job-{i}", timeout=timedelta(hours=1), grace=timedelta(hours=1))
    for i in range(%d)
)
print("codes:", " ".join(str(c.code) for c in checks))
"""


async def stored_pings(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval("SELECT coalesce(sum(n_pings), 0) FROM api_check")
        return int(n)
    finally:
        await conn.close()


def _answers(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server answers HTTP at all (a 404 is an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({proc.returncode}); its log ends:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(
        f"Healthchecks did not answer {url} within {timeout:.0f} s; its log ends:\n{_tail(log)}"
    )


def _tail(log: Path) -> str:
    """The end of a log in the run's folder, which is removed on the way out."""
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def run(
    root: Path,
    checks: int,
    core: str,
    measure: Callable[[str, list[str], dict[str, list[int]], Callable[[], int]], dict[str, Any]],
) -> dict[str, Any]:
    """Start Healthchecks on a fresh database, seed `checks` checks, hand the base URL, the
    ping paths, the process roots and a stored-pings counter to `measure` (the bench's wrk
    run), stop everything. `core`: the CPU gunicorn is pinned to, as the controller is."""
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    pg = devstack.PostgresServer(work / "pg", ephemeral=True, durable=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        asyncio.run(devstack.create_database(pg.dsn(), "hc", drop=True))
        port = devstack.free_port()
        env = hc_env(root, port, pg.port)
        t = time.monotonic()
        manage(root, env, "migrate", "--noinput")
        # The shell may print more (Django's auto-imports): the codes are on their own line.
        shell = manage(root, env, "shell", "-c", SEED % checks)
        codes = next(line for line in shell.splitlines() if line.startswith("codes: ")).split()[1:]
        click.echo(
            f"healthchecks {version(root)}: migrated and {len(codes)} checks created"
            f" in {time.monotonic() - t:.1f} s"
        )
        log = work / "gunicorn.log"
        with log.open("wb") as out:
            web = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    core,
                    str(root / "venv" / "bin" / "gunicorn"),
                    "--workers",
                    str(WORKERS),
                    "--worker-class",
                    "gthread",
                    "--threads",
                    str(THREADS),
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "warning",
                    "hc.wsgi:application",
                ],
                cwd=root / "src",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            procs.append(web)
            alerts = subprocess.Popen(
                [str(root / "venv" / "bin" / "python"), "manage.py", "sendalerts", "--skip-checks"],
                cwd=root / "src",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            procs.append(alerts)
        base = f"http://127.0.0.1:{port}"
        _answers(f"{base}/ping/00000000-0000-4000-8000-000000000000", 120, web, log)
        assert pg.proc is not None
        roots = {"gunicorn": [web.pid], "sendalerts": [alerts.pid], "postgres": [pg.proc.pid]}
        res = measure(
            base, [f"/ping/{c}" for c in codes], roots, lambda: asyncio.run(stored_pings(pg.dsn("hc")))
        )
        res["code"] = f"Healthchecks {version(root)}"
        return res
    finally:
        stop_processes(procs, wait=30)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- command line


@click.group()
def cli() -> None:
    """Healthchecks, the peer of bench.heartbeat_pings, installed outside the repository."""


@cli.command("setup")
@click.option("--git-dir", type=click.Path(path_type=Path), help="A (bare) clone to unpack a release from.")
@click.option("--tag", help="The release to unpack (default: the newest vX.Y tag).")
@click.option("--python", "python", help="Python 3.12+ for the venv (default: found on PATH or pyenv).")
def setup_command(git_dir: Path | None, tag: str | None, python: str | None) -> None:
    """Make $PROBEFLEET_HEALTHCHECKS_DIR runnable: unpack (optional), venv, requirements, check."""
    root = root_dir()
    if not root.is_dir():
        raise click.UsageError(f"{ENV}={root}: no such folder.\n{PROVIDE}")
    setup(root, git_dir, tag, python)


if __name__ == "__main__":
    cli(prog_name=f"{Path(sys.executable).name} -m bench.healthchecks")
