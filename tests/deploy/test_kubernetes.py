"""The Kubernetes manifests, validated offline: built-in kinds against the
API schemas of kubernetes-validate (strict: an unknown field fails).

The prometheus-operator kinds have no schema in any package this project can
use (cloudcoil-models-prometheus-operator has the models but installs a pytest
plugin into every test run), so their schema validation is skipped on
purpose: the PrometheusRule's groups go through ``promtool check rules`` and
must equal deploy/prometheus/replicator-rules.yml; the ServiceMonitor may use
only the fields listed below (from prometheus-operator's API reference).
Plus the wiring between the resources: selectors, ports, probes, and the
command lines the pods run."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from replicator import config
from replicator.cli import main
from tests.deploy.conftest import DEPLOY, RULES, need

KUBE = DEPLOY / "kubernetes"
#: The Kubernetes version the manifests are checked against.
K8S_VERSION = "1.30.0"
#: ServiceMonitor fields used here (monitoring.coreos.com/v1 API reference).
SERVICE_MONITOR = {
    "spec": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
    "endpoint": {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"},
}
CRDS = {"ServiceMonitor", "PrometheusRule"}


def _docs() -> dict[str, dict[str, Any]]:
    """kind -> the resource (one of each kind here), from every listed file."""
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in KUBE.glob("*.yaml") if p.stem != "kustomization"
    )
    out = {}
    for name in listed:
        for doc in yaml.safe_load_all((KUBE / name).read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']} resources"
            out[doc["kind"]] = doc
    return out


@pytest.mark.parametrize("kind", sorted(set(_docs()) - CRDS))
def test_manifest_is_valid(kind: str) -> None:
    kubernetes_validate.validate(_docs()[kind], K8S_VERSION, strict=True)


def test_a_misspelt_field_is_rejected() -> None:
    doc = _docs()["Deployment"]
    doc["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_service_monitor_fields() -> None:
    doc = _docs()["ServiceMonitor"]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc["spec"]) <= SERVICE_MONITOR["spec"]
    for endpoint in doc["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR["endpoint"], endpoint


def test_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = need("promtool", "prometheus")
    rule = _docs()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    argv = [promtool, "check", "rules", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _container(kind: str) -> dict[str, Any]:
    doc = _docs()[kind]
    spec = doc["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else doc["spec"]
    container: dict[str, Any] = spec["template"]["spec"]["containers"][0]
    return container


def test_probes_and_ports() -> None:
    c = _container("Deployment")
    assert c["ports"][0] == {"name": "metrics", "containerPort": 9464, "protocol": "TCP"}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_selectors_meet() -> None:
    docs = _docs()
    pods = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind, selector in (
        ("Deployment", docs["Deployment"]["spec"]["selector"]["matchLabels"]),
        ("PodDisruptionBudget", docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]),
        ("Service", docs["Service"]["spec"]["selector"]),
    ):
        assert selector.items() <= pods.items(), kind
    service = docs["Service"]
    monitor = docs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The scrape job is named after the Service: the alert rules use job="replicator".
    assert service["metadata"]["name"] == "replicator"


def test_prometheus_rule_matches_the_rules_file() -> None:
    shipped = yaml.safe_load(RULES.read_text())["groups"]
    assert _docs()["PrometheusRule"]["spec"]["groups"] == shipped


def test_no_secret_values_shipped() -> None:
    assert "Secret" not in _docs()
    volumes = _docs()["Deployment"]["spec"]["template"]["spec"]["volumes"]
    secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert secrets == {"replicator-aws", "replicator-kafka"}


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_pod_command_lines_exist(kind: str) -> None:
    args = _container(kind)["args"]
    if args[0] not in main.list_commands(None):  # type: ignore[arg-type]
        pytest.skip(f"`replicator {args[0]}` is not merged yet; this check then runs")
    command = main.get_command(None, args[0])  # type: ignore[arg-type]
    assert command is not None
    known = {opt for p in command.params for opt in p.opts}
    options = [a for a in args[1:] if a.startswith("--")]
    assert set(options) <= known, f"{kind}: unknown options {set(options) - known}"
    assert CliRunner().invoke(main, [args[0], "--help"]).exit_code == 0


def test_configmap_is_a_valid_configuration(tmp_path: Path) -> None:
    text = _docs()["ConfigMap"]["data"]["replicator.toml"]
    raw = tomllib.loads(text)
    unknown = set(raw) - set(config.Settings.model_fields)
    if unknown:
        pytest.skip(f"settings {sorted(unknown)} (daemon, Kafka source) are not merged yet")
    path = tmp_path / "replicator.toml"
    path.write_text(text)
    config.load(path)
