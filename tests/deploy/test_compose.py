"""deploy/compose.yaml starts in one command: the file is valid YAML (yamllint) with the
services and the start order that make that true, and its two one-shot steps
(deploy/compose-init.sh, the entrypoints of `init` and `enroll`) are run here for real:
`trust` in a temporary folder, its NATS trust then running a real nats-server that the
controller's credential connects to; `enroll` against a real controller and PostgreSQL,
then a probe service's own entrypoint line enrolling with its token and connecting. No
container runs (no Docker daemon or registry)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from probefleet.controller.config import Region
from probefleet.probe import enroll as probe_enroll
from probefleet.shared.devstack import NatsServer
from tests.controller.conftest import start_controller
from tests.deploy.conftest import DEPLOY
from tests.fleet import SecureNats
from tests.helpers import eventually

COMPOSE = DEPLOY / "compose.yaml"
INIT = DEPLOY / "compose-init.sh"
REGIONS = ["us-east", "eu-west", "ap-south"]
# yamllint's defaults, with lines as long as the repository's and no `---` required.
YAMLLINT = YamlLintConfig("extends: default\nrules:\n  line-length: {max: 150}\n  document-start: disable\n")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.mark.parametrize(
    "path",
    [
        COMPOSE,
        DEPLOY / "remote-region" / "probe-region.compose.yaml",
        DEPLOY.parent / "helm/probefleet/values.yaml",
    ],
)
def test_yaml_is_clean_for_yamllint(path: Path) -> None:
    problems = [str(p) for p in linter.run(path.read_text(), YAMLLINT)]
    assert problems == []


def _after(services: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or not."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in services[todo.pop()].get("depends_on", {}):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_one_up_runs_init_then_the_stack_then_enroll_then_probes() -> None:
    data = compose()
    services = data["services"]
    probes = [f"probe-{r}" for r in REGIONS]
    assert set(services) == {"init", "nats", "postgres", "migrate", "controller", "enroll", *probes}
    for name, spec in services.items():
        for dep, how in spec.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            one_shot = services[dep].get("restart") == "no"
            assert how["condition"] == ("service_completed_successfully" if one_shot else "service_healthy")
        for volume in spec.get("volumes", []):
            assert volume.split(":")[0] in data["volumes"], (name, volume)
        assert name not in _after(services, name), f"{name} waits for itself"
    assert _after(services, "nats") == {"init"}
    assert _after(services, "postgres") == {"init"}
    assert _after(services, "controller") == {"init", "nats", "postgres", "migrate"}
    assert _after(services, "enroll") == {"init", "nats", "postgres", "migrate", "controller"}
    for probe in probes:
        assert "enroll" in _after(services, probe)
        assert "enroll:/run/probefleet-enroll:ro" in services[probe]["volumes"]
    # The two steps are the script the controller image carries.
    assert services["init"]["entrypoint"] == ["probefleet-compose-init"] and services["init"]["command"] == [
        "trust"
    ]
    assert services["enroll"]["entrypoint"] == ["probefleet-compose-init"] and services["enroll"][
        "command"
    ] == ["enroll"]
    dockerfile = (DEPLOY / "Dockerfile.controller").read_text()
    assert "COPY deploy/compose-init.sh /usr/local/bin/probefleet-compose-init" in dockerfile
    assert services["enroll"]["environment"]["REGIONS"].split() == REGIONS
    # Nothing to make by hand any more: no host files, no .env tokens.
    assert "secrets" not in data
    assert "${ENROLL_TOKEN" not in COMPOSE.read_text()


def test_the_steps_write_where_the_services_read() -> None:
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-(.*)\}$", INIT.read_text(), re.M))
    services = compose()["services"]

    def mounted(service: str, volume: str) -> set[str]:
        return {v.split(":")[1] for v in services[service]["volumes"] if v.split(":")[0] == volume}

    assert defaults["SECRETS_DIR"] in mounted("init", "secrets") & mounted("controller", "secrets")
    assert defaults["FLEET_DIR"] in mounted("init", "fleet") & mounted("nats", "fleet") & mounted(
        "controller", "fleet"
    )
    assert defaults["ENROLL_DIR"] in mounted("enroll", "enroll") & mounted("probe-eu-west", "enroll")
    # NATS keeps account JWTs under its data volume, where the trust's config says.
    assert defaults["NATS_RESOLVER_DIR"].startswith(next(iter(mounted("nats", "nats-data"))) + "/")
    assert defaults["NATS_HOSTNAME"] in services and defaults["POSTGRES_HOST"] in services
    assert defaults["REGIONS"].split() == REGIONS
    secrets = defaults["SECRETS_DIR"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == f"{secrets}/postgres_password"
    assert services["controller"]["environment"]["PROBEFLEET_DATABASE_URL_FILE"] == f"{secrets}/database_url"
    assert services["controller"]["environment"]["PROBEFLEET_FLEET_TRUST_DIR"] == defaults["FLEET_DIR"]


def _step(step: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The step as the image runs it: the script, probefleet and python on PATH."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(INIT), step],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _trust_env(tmp_path: Path) -> dict[str, str]:
    return {
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "FLEET_DIR": str(tmp_path / "fleet"),
        "NATS_RESOLVER_DIR": str(tmp_path / "nats" / "jwt"),
    }


async def test_the_trust_step_makes_secrets_and_a_trust_nats_runs(tmp_path: Path) -> None:
    env = _trust_env(tmp_path)
    done = await asyncio.to_thread(_step, "trust", env)
    assert done.returncode == 0, done.stderr
    secrets = tmp_path / "secrets"
    password = (secrets / "postgres_password").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", password)
    assert (secrets / "database_url").read_text().strip() == (
        f"postgresql://probefleet:{password}@postgres:5432/probefleet"
    )
    for name in ("postgres_password", "database_url"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o400
    assert password not in done.stdout + done.stderr, "a secret in the log"
    fleet = tmp_path / "fleet"
    made = {p.name: p.read_bytes() for p in fleet.iterdir()}
    assert {"nats-server.conf", "controller.creds", "ca.pem", "server-cert.pem"} <= set(made)

    # Again (`up` after `down`): nothing changes.
    again = await asyncio.to_thread(_step, "trust", env)
    assert again.returncode == 0, again.stderr
    assert (secrets / "postgres_password").read_text().strip() == password
    assert {p.name: p.read_bytes() for p in fleet.iterdir()} == made

    # The trust runs NATS (operator mode, TLS for the name `nats`), and the controller's
    # credential connects to it.
    server = NatsServer(tmp_path / "nats", trust_conf=(fleet / "nats-server.conf").read_text(), tls=True)
    server.start()
    try:
        tls = ssl.create_default_context(cafile=str(fleet / "ca.pem"))
        nc = await nats.connect(
            server.url,
            user_credentials=str(fleet / "controller.creds"),
            tls=tls,
            tls_hostname="nats",
            connect_timeout=5,
            max_reconnect_attempts=0,
        )
        try:
            assert nc.is_connected
            await nc.flush()
        finally:
            await nc.close()
    finally:
        server.stop()


async def test_the_enroll_step_makes_one_token_per_region_that_enrolls_a_probe(
    database: str, secure_nats: SecureNats, tmp_path: Path
) -> None:
    running = await start_controller(
        database,
        secure_nats.url,
        fleet_trust_dir=str(secure_nats.trust_dir),
        nats_insecure=False,
        regions=[Region(id=r) for r in REGIONS],
    )
    try:
        enroll_dir = tmp_path / "enroll"
        env = {
            "PROBEFLEET_DATABASE_URL": database,
            "PROBEFLEET_URL": running.base,
            "ENROLL_DIR": str(enroll_dir),
            "REGIONS": " ".join(REGIONS),
        }
        done = await asyncio.to_thread(_step, "enroll", env)
        assert done.returncode == 0, done.stderr
        tokens = {r: (enroll_dir / r).read_text().strip() for r in REGIONS}
        assert all(tokens.values()) and len(set(tokens.values())) == 3
        for token in tokens.values():
            assert token not in done.stdout + done.stderr, "a token in the log"
        # The step's API key stays in its shell: none in the log, which names its scope.
        assert not re.search(r"\bpf_[\w-]{20,}", done.stdout + done.stderr), "an API key in the log"
        assert "fleet:admin" in done.stderr
        # Again: every region has its token, none is made.
        again = await asyncio.to_thread(_step, "enroll", env)
        assert again.returncode == 0, again.stderr
        assert "every region has its enrollment token" in again.stdout
        assert {r: (enroll_dir / r).read_text().strip() for r in REGIONS} == tokens

        # The probe service's own entrypoint line, its token folder moved here: the probe
        # enrolls, connects to the secure NATS with its credential and reports healthy.
        probe = compose()["services"]["probe-us-east"]
        # ($$ is compose's escape for a $ it must not interpolate.)
        shell = probe["entrypoint"][-1].replace("$$", "$").replace("/run/probefleet-enroll", str(enroll_dir))
        assert "${" not in shell, "a compose variable the test does not substitute"
        assert probe["entrypoint"][:2] == ["sh", "-c"] and shell.count(str(enroll_dir)) == 1
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        probe_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROBEFLEET_")},
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            **{k: str(v) for k, v in probe["environment"].items()},
            # Where this test's controller and NATS are, and a state folder of its own.
            "PROBEFLEET_CONTROLLER_URL": running.base,
            "PROBEFLEET_NATS_URL": secure_nats.url,
            "PROBEFLEET_PROBE_METRICS_LISTEN": f"127.0.0.1:{port}",
            "PROBEFLEET_STATE_DIR": str(tmp_path / "probe-us-east"),
        }
        assert probe_env["PROBEFLEET_REGION"] == "us-east"
        log = tmp_path / "probe.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", shell, env=probe_env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            return resp.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                try:
                    await eventually(healthy, timeout=30, what="the compose probe enrolled and healthy")
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{log.read_text()}") from None
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0, log.read_text()
        assert (tmp_path / "probe-us-east").is_dir()
        assert tokens["us-east"] not in log.read_text(), "a token in the log"

        state = await asyncio.to_thread(
            probe_enroll.enroll, running.base, tokens["eu-west"], tmp_path / "probe-state"
        )
        assert state.region == "eu-west"
        # One use each: a second probe needs a token of its own.
        with pytest.raises(probe_enroll.EnrollError, match="enrollment refused"):
            await asyncio.to_thread(probe_enroll.enroll, running.base, tokens["eu-west"], tmp_path / "other")
    finally:
        await running.stop()
