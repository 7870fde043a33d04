"""The Helm chart rendered, linted and validated with Helm as a library (helm-python-sdk):
no helm binary, no cluster, no network.

Every case of a matrix of values is rendered; each manifest is checked against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate (offline, strict: unknown
fields are errors), then against the chart's promises: non-root pods with read-only root
filesystems and no privilege escalation, probes and resources on every long-running
container, a PodDisruptionBudget, anti-affinity and topology spread for several
controllers, NetworkPolicies, and a controller.toml the controller loads.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from probefleet.controller import config as controller_config
from probefleet.probe import config as probe_config
from tests.deploy.conftest import CHART

KUBE_VERSION = "1.30.0"
# The oldest and the newest schemas kubernetes-validate carries (the chart says >=1.23;
# nothing it uses changed between 1.23 and 1.25).
SCHEMA_VERSIONS = ["1.25.0", "1.37.0"]
DB = {"url": "postgresql://probefleet:pw@db.example:5432/probefleet"}
TRUST = {"trustSecret": "probefleet-fleet"}
ENROLL = {"enrollment": {"existingSecret": "probefleet-enroll"}}

CASES: dict[str, dict[str, Any]] = {
    "minimal": {"database": DB, "nats": TRUST},
    "insecure-one-controller": {
        "database": DB,
        "nats": {"url": "nats://nats:4222", "insecure": True},
        "controller": {"replicas": 1},
    },
    "existing-secrets": {
        "database": {"existingSecret": "db", "existingSecretKey": "url"},
        "nats": {"existingSecret": "nats", "existingSecretKey": "url", **TRUST},
        "controller": {"secrets": {"existingSecret": "controller-secrets"}},
        "probes": ENROLL,
    },
    "ingress": {
        "database": DB,
        "nats": TRUST,
        "controller": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": [{"host": "pf.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                "tls": [{"secretName": "pf-tls", "hosts": ["pf.example.com"]}],
            }
        },
    },
    "quick-start-nats-and-postgresql": {
        "nats": TRUST,
        "natsServer": {"enabled": True},
        "postgresql": {"enabled": True},
        "probes": ENROLL,
    },
    "three-regions": {
        "database": DB,
        "nats": {**TRUST, "probeUrls": ["tls://nats.example.com:4222"]},
        "controller": {
            "replicas": 3,
            "regions": [{"id": "eu-central"}, {"id": "us-west"}, {"id": "sa-east", "city": "São Paulo"}],
        },
        "probes": {
            **ENROLL,
            "regions": [
                {"name": "eu-central", "replicas": 1},
                {
                    "name": "us-west",
                    "replicas": 3,
                    "nodeSelector": {"topology.kubernetes.io/region": "us-west1"},
                },
                {
                    "name": "sa-east",
                    "replicas": 2,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                },
            ],
        },
    },
    "service-monitor": {"database": DB, "nats": TRUST, "probes": ENROLL, "serviceMonitor": {"enabled": True}},
    # init-fleet --mutual-tls: the trust carries the controller's client certificate and
    # NATS's `verify`; the chart's NATS runs that configuration, probes enroll for theirs.
    "mutual-tls": {
        "database": DB,
        "nats": TRUST,
        "natsServer": {"enabled": True},
        "probes": {**ENROLL, "icmp": {"netRaw": True}, "clientCertSecret": "probefleet-probe-cert"},
        "controller": {
            "config": {"public_url": "https://pf.example.com", "smtp_host": "smtp.example.com"},
            "secrets": {"statusPageSecret": "s3cret-cookie-key", "smtpPassword": "hunter2"},
            "extraEnv": [{"name": "PROBEFLEET_LOG_FORMAT", "value": "json"}],
            "extraEnvFrom": [{"secretRef": {"name": "more"}}],
        },
    },
}

WORKLOADS = {"Deployment", "StatefulSet", "Job"}


def render(values: dict[str, Any]) -> dict[str, str]:
    return helm_python.Chart.load(str(CHART)).render(
        copy.deepcopy(values), name="pf", namespace="monitoring", is_install=True
    )


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for name, text in render(values).items():
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def controller(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-controller")]
    return found


@pytest.fixture(scope="module", params=sorted(CASES), ids=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = CASES[request.param]
    return values, manifests(values)


def test_lint_is_clean_with_no_warnings() -> None:
    for values in CASES.values():
        report = helm_python.lint(str(CHART), copy.deepcopy(values), strict=True, kube_version=KUBE_VERSION)
        assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(
    case: tuple[dict[str, Any], list[dict[str, Any]]], version: str
) -> None:
    _, docs = case
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # A CRD (Prometheus Operator): no schema in the bundle; its fields are checked below.
            assert set(doc["spec"]) == {"selector", "endpoints"} | (
                {"podTargetLabels"} if doc["metadata"]["name"].endswith("-probe") else set()
            )
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 5


def _pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d, d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in WORKLOADS
    ]


def test_every_pod_is_non_root_read_only_and_unprivileged(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = case
    pods = _pods(docs)
    assert pods
    for where, _, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert set(sc["capabilities"].get("add", [])) <= {"NET_RAW"}, where


def test_every_long_running_container_has_probes_and_resources(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = case
    for where, workload, pod in _pods(docs):
        for c in pod["containers"]:
            assert c["resources"]["requests"], where
            assert "memory" in c["resources"]["limits"], where
            if workload["kind"] != "Job":
                assert c["readinessProbe"] and c["livenessProbe"], where


def test_probe_pods_are_checked_on_healthz_and_readyz(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = case
    probes = [d for d in by_kind(docs, "Deployment") if "-probe-" in d["metadata"]["name"]]
    if not values.get("probes", {}).get("enrollment") and not values["nats"].get("insecure"):
        assert probes == []  # no tokens yet: probes come with the second install
        return
    assert probes
    net_raw = values.get("probes", {}).get("icmp", {}).get("netRaw", False)
    for d in probes:
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        # ICMP through unprivileged echo sockets by default; raw sockets only opted in.
        assert pod["securityContext"]["sysctls"] == [
            {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}
        ]
        assert ("NET_RAW" in c["securityContext"]["capabilities"].get("add", [])) is net_raw
        assert pod["topologySpreadConstraints"]
        assert pod["serviceAccountName"] == "pf-probefleet"


def test_several_controllers_get_a_pdb_anti_affinity_and_spread(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = case
    pod = controller(docs)["spec"]["template"]["spec"]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if values.get("controller", {}).get("replicas", 2) > 1:
        (pdb,) = pdbs
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
        assert pod["affinity"]["podAntiAffinity"]
        assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    else:
        assert pdbs == []
        assert "affinity" not in pod


def test_network_policies_limit_where_pods_go(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, docs = case
    policies = {d["metadata"]["name"]: d for d in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"pf-probefleet-controller", "pf-probefleet-probe"}
    probe_egress = policies["pf-probefleet-probe"]["spec"]["egress"]
    internet = [r for r in probe_egress if r.get("to") and "ipBlock" in r["to"][0]]
    (rule,) = internet
    assert "10.0.0.0/8" in rule["to"][0]["ipBlock"]["except"]
    ports = {
        p["port"] for r in policies["pf-probefleet-controller"]["spec"]["egress"] for p in r.get("ports", [])
    }
    assert {53, 4222, 5432} <= ports


def test_the_chart_owns_a_service_account_and_mounts_no_token(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = case
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert controller(docs)["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_controller_config_becomes_a_toml_file_the_controller_loads(tmp_path: Path) -> None:
    settings = {
        "public_url": "https://pf.example.com",
        "smtp_host": "smtp.example.com",
        "smtp_port": 465,
        "smtp_security": "tls",
        "smtp_from": 'Status "pf" <status@example.com>',
        "rate_limit_window": 2.5,
        "notification_channels_allow_private": True,
        "fleet_nats_urls": ["tls://a.example:4222", "tls://b.example:4222"],
        "nats_stream_replicas": 3,
    }
    docs = manifests({"database": DB, "nats": TRUST, "controller": {"config": settings}})
    (cm,) = by_kind(docs, "ConfigMap")
    path = tmp_path / "controller.toml"
    path.write_text(cm["data"]["controller.toml"])
    assert tomllib.loads(path.read_text())["smtp_from"] == settings["smtp_from"]
    cfg = controller_config.load(path)
    for key, value in settings.items():
        assert getattr(cfg, key) == value, key
    assert cfg.region_ids() == ["us-east", "eu-west", "ap-south"]


def test_probe_toml_is_a_file_the_probe_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PROBEFLEET_")]:
        monkeypatch.delenv(name)
    docs = manifests({"database": DB, "nats": TRUST, "probes": {"drainTimeoutSeconds": 40}})
    (cm,) = by_kind(docs, "ConfigMap")
    path = tmp_path / "probe.toml"
    path.write_text(cm["data"]["probe.toml"])
    assert probe_config.load_probe_config(path, region="eu-west").drain_timeout == 40
    # The pods' grace period covers both halves of the drain.
    docs = manifests({"database": DB, "nats": TRUST, "probes": {**ENROLL, "drainTimeoutSeconds": 40}})
    probe = next(d for d in by_kind(docs, "Deployment") if "-probe-" in d["metadata"]["name"])
    assert probe["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 2 * 40


def test_secret_settings_go_to_a_secret_and_arrive_as_environment() -> None:
    docs = manifests(CASES["mutual-tls"])
    (cm,) = by_kind(docs, "ConfigMap")
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    assert "hunter2" not in yaml.safe_dump(cm)
    assert set(secrets["pf-probefleet-urls"]["data"]) == {
        "database-url",
        "nats-url",
        "status-page-secret",
        "smtp-password",
    }
    env = {e["name"]: e for e in controller(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["PROBEFLEET_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("pf-probefleet-urls", "smtp-password")
    assert env["PROBEFLEET_LOG_FORMAT"]["value"] == "json"
    assert controller(docs)["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "more"}}
    ]


def test_mutual_tls_gives_probes_the_client_certificate() -> None:
    docs = manifests(CASES["mutual-tls"])
    for d in [d for d in by_kind(docs, "Deployment") if "-probe-" in d["metadata"]["name"]]:
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        mount = next(m for m in c["volumeMounts"] if m["name"] == "client-cert")
        assert env["PROBEFLEET_NATS_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
        assert env["PROBEFLEET_NATS_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
        volume = next(v for v in pod["volumes"] if v["name"] == "client-cert")
        assert volume["secret"] == {"secretName": "probefleet-probe-cert", "defaultMode": 0o440}
        assert pod["securityContext"]["fsGroup"] == 10001


def test_quick_start_components_are_wired_to_each_other() -> None:
    docs = manifests(CASES["quick-start-nats-and-postgresql"])
    sets = {d["metadata"]["name"]: d for d in by_kind(docs, "StatefulSet")}
    assert set(sets) == {"pf-probefleet-nats", "pf-probefleet-postgresql"}
    nats = sets["pf-probefleet-nats"]["spec"]["template"]["spec"]
    assert nats["containers"][0]["args"][:2] == ["-c", "/etc/probefleet/fleet/nats-server.conf"]
    assert "-js" in nats["containers"][0]["args"]
    assert nats["volumes"] == [
        {"name": "fleet", "secret": {"secretName": "probefleet-fleet", "defaultMode": 0o440}}
    ]
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    url = base64.b64decode(secrets["pf-probefleet-postgresql"]["data"]["database-url"]).decode()
    password = base64.b64decode(secrets["pf-probefleet-postgresql"]["data"]["password"]).decode()
    assert url == f"postgresql://probefleet:{password}@pf-probefleet-postgresql:5432/probefleet"
    nats_url = base64.b64decode(secrets["pf-probefleet-urls"]["data"]["nats-url"]).decode()
    assert nats_url == "tls://pf-probefleet-nats:4222"
    # No database exists before install: controllers migrate at start instead of a hook.
    assert by_kind(docs, "Job") == []
    volumes = controller(docs)["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "database-url",
        "secret": {
            "secretName": "pf-probefleet-postgresql",
            "items": [{"key": "database-url", "path": "database-url"}],
        },
    } in volumes


def test_notes_say_how_to_get_the_first_key_and_open_the_console() -> None:
    notes = render(CASES["ingress"])["probefleet/templates/NOTES.txt"]
    assert "probefleet controller create-key --name ops" in notes
    assert "https://pf.example.com/\n" in notes
    notes = render(CASES["minimal"])["probefleet/templates/NOTES.txt"]
    assert "port-forward svc/pf-probefleet-controller 8080:8080" in notes
    assert "http://127.0.0.1:8080/ " in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"controller": {"replicas": 0}}, "at '/controller/replicas': minimum: got 0, want 1"),
        (
            {"controller": {"config": {"smtp_pasword": "x"}}},
            "additional properties 'smtp_pasword' not allowed",
        ),
        (
            {"controller": {"config": {"smtp_port": "587"}}},
            "at '/controller/config/smtp_port': got string, want integer",
        ),
        ({"controller": {"config": {"smtp_security": "ssl"}}}, "at '/controller/config/smtp_security'"),
        # A secret setting in the ConfigMap would be readable by anyone who can read it.
        (
            {"controller": {"config": {"smtp_password": "x"}}},
            "additional properties 'smtp_password' not allowed",
        ),
        ({"probes": {"icmp": {"netRaw": "yes"}}}, "at '/probes/icmp/netRaw': got string, want boolean"),
        ({"probes": {"regions": [{"name": "EU West", "replicas": 1}]}}, "at '/probes/regions/0/name'"),
        ({"nats": {"url": "http://nats:4222"}}, "at '/nats/url'"),
        ({"database": {"url": "mysql://db/p"}}, "at '/database/url'"),
        ({"controller": {"logLevel": "verbose"}}, "at '/controller/logLevel'"),
        ({"natsServer": {"storage": {"size": "lots"}}}, "at '/natsServer/storage/size'"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ],
    ids=lambda v: "" if isinstance(v, str) else next(iter(v)),
)
def test_the_values_schema_rejects_bad_values_clearly(values: dict[str, Any], message: str) -> None:
    merged = {"database": DB, "nats": TRUST} | {
        k: ({**base, **v} if isinstance(base := {"database": DB, "nats": TRUST}.get(k), dict) else v)
        for k, v in values.items()
    }
    with pytest.raises(helm_python.HelmValuesError) as e:
        render(merged)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database": DB}, "set nats.trustSecret"),
        ({"nats": TRUST}, "set database.url or database.existingSecret"),
        (
            {
                "database": DB,
                "nats": TRUST,
                "probes": {**ENROLL, "regions": [{"name": "mars", "replicas": 1}]},
            },
            "probes.regions mars is missing from controller.regions",
        ),
    ],
)
def test_missing_or_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError) as e:
        render(values)
    assert message in str(e.value)


def test_schema_lists_every_controller_setting_the_chart_does_not_set_itself() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    listed = set(schema["properties"]["controller"]["properties"]["config"]["properties"])
    fields = set(controller_config.ControllerConfig.__struct_fields__)
    managed = {
        "database_url",
        "nats_url",
        "host",
        "port",
        "regions",
        "controller_id",
        "log_level",
        "fleet_trust_dir",
        "nats_insecure",
        "status_page_secret",
        "smtp_password",
    }
    # A new controller setting belongs in helm/probefleet/values.schema.json, under
    # controller.config.properties, with its JSON type (else the chart refuses it).
    assert listed == fields - managed, "values.schema.json's controller.config is not the settings' list"
