"""Installing a release as the README says: `make dist`, then the wheel into a clean venv
with the locked requirements of each role, then the commands a new host runs first."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from probefleet.shared.version import VERSION

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The wheel `make dist` builds (with the locked setuptools, no download)."""
    done = subprocess.run(["make", "--no-print-directory", "dist"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list((REPO / "dist").glob(f"probefleet-{VERSION}-py3-none-any.whl"))
    sdists = list((REPO / "dist").glob(f"probefleet-{VERSION}.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((REPO / "dist").iterdir())
    assert not (REPO / "probefleet.egg-info").exists(), "stale metadata would hide the venv's own"
    return wheels[0]


def test_the_wheel_holds_one_namespace_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith(f"probefleet-{VERSION}.dist-info/")}
    assert tops == {"probefleet"}
    shipped = {n.removeprefix("probefleet/") for n in names if n.endswith((".py", ".sql", ".js"))}
    # probefleet.client is kept in shared/client (pyproject's package-dir).
    shipped = {"shared/" + n if n.startswith("client/") else n for n in shipped}
    sources = {
        str(p.relative_to(REPO))
        for role in ("controller", "probe", "shared")
        for p in (REPO / role).rglob("*")
        if p.suffix in (".py", ".sql", ".js") and "__pycache__" not in p.parts
    }
    assert shipped == sources


@pytest.fixture(scope="module")
def clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with nothing but the locked requirements of both roles and the wheel, made
    with the README's commands. Two flags the README does not need save seconds without
    changing what is installed: no byte-compiling of every installed module (the tests
    import few), and no look-up of a newer pip on the index."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--quiet", "--no-compile"]
    pip.append("--disable-pip-version-check")
    subprocess.run(
        [
            *pip,
            "--require-hashes",
            "-r",
            str(REPO / "requirements" / "controller.txt"),
            "-r",
            str(REPO / "requirements" / "probe.txt"),
        ],
        check=True,
    )
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True)
    return venv


def run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Outside the checkout, so the modules come from the installed wheel, not the sources.
    return subprocess.run(
        [str(venv / "bin" / "probefleet"), *args], capture_output=True, text=True, cwd=venv, timeout=60
    )


def test_the_readme_installs_from_the_wheel_make_dist_builds() -> None:
    assert "make dist" in README
    assert f"dist/probefleet-{VERSION}-py3-none-any.whl" in README
    for role in ("controller", "probe"):
        assert f"requirements/{role}.txt" in README
    # No index has the package: the README may not tell anyone to install it by name.
    assert not re.search(r"pip install ['\"]?probefleet\b", README)


def test_the_wheel_runs_help_from_a_clean_venv(clean_venv: Path) -> None:
    done = run(clean_venv, "--help")
    assert done.returncode == 0 and "controller" in done.stdout and "probe" in done.stdout
    where = subprocess.run(
        [str(clean_venv / "bin" / "python"), "-c", "import probefleet.controller as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        cwd=clean_venv,
        check=True,
    ).stdout
    assert str(clean_venv) in where


def test_the_wheel_migrates_a_database(clean_venv: Path, database: str) -> None:
    done = run(clean_venv, "controller", "migrate", "--database-url", database)
    assert done.returncode == 0, done.stderr
    assert "0001_core" in done.stdout  # the migrations ship inside the wheel


@pytest.fixture
def target() -> Iterator[str]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"fine")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_the_wheel_runs_a_probe_check(clean_venv: Path, target: str) -> None:
    ok = run(clean_venv, "probe", "check", "--kind", "http", "--url", target, "--expect", "fine")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run(clean_venv, "probe", "check", "--kind", "http", "--url", target, "--expect", "missing")
    assert bad.returncode == 1


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    for name in ("probe", "controller", "all", "dev", "build"):
        text = (REPO / "requirements" / f"{name}.txt").read_text()
        blocks = re.split(r"\n(?=[^\s#])", text.split("\n", 2)[2])
        assert blocks, name
        for block in blocks:
            assert re.match(r"[A-Za-z0-9_.-]+==[^\s;]+", block), block
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    probe = (REPO / "requirements" / "probe.txt").read_text()
    for dep in declared:
        name = re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0]
        assert re.search(rf"^{name}==", probe, re.M), name
