"""The Kubernetes manifests, validated offline: built-in kinds against the
API schemas of kubernetes-validate (strict: an unknown field fails).

The prometheus-operator kinds (ServiceMonitor, PrometheusRule) are validated
with ``jsonschema`` against the openAPIV3Schema of their real CRDs, from the
pinned prometheus-operator module (tests/services/crds.py, fetched once into
~/.cache/replicator by ./dev ops_tools). Strict like ``kubectl apply``'s
server-side field validation: an object schema that lists its properties
refuses any other field (the API server would drop or reject it). The
PrometheusRule's groups also go through ``promtool check rules`` and must
equal deploy/prometheus/replicator-rules.yml. Plus the wiring between the
resources: selectors, ports, probes, and the command lines the pods run."""

from __future__ import annotations

import copy
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from replicator import config
from replicator.cli import main
from tests.deploy.conftest import DEPLOY, RULES, need, unavailable
from tests.services import crds
from tests.services.process import ServiceError

KUBE = DEPLOY / "kubernetes"
#: The Kubernetes version the manifests are checked against.
K8S_VERSION = "1.30.0"
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


def _strict(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that
    lists its properties and does not keep unknown fields."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    keeps = out.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in out
    if "properties" in out and not keeps:
        out["additionalProperties"] = False
    return out


def _crd_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    try:
        schema = crds.schema(kind, api_version)
    except ServiceError as exc:
        unavailable(f"prometheus-operator CRDs: {exc}")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(_strict(schema), format_checker=None)


def _crd_errors(doc: dict[str, Any]) -> list[str]:
    validator = _crd_validator(doc["kind"], doc["apiVersion"])
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_operator_resource_matches_its_crd(kind: str) -> None:
    doc = _docs()[kind]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert _crd_errors(doc) == [], kind
    print(f"{kind}: valid against prometheus-operator {crds.VERSION}'s CRD schema")


@pytest.mark.parametrize(
    ("kind", "path", "field", "value"),
    [
        ("ServiceMonitor", ("spec", "endpoints", 0), "scrapeTimout", "10s"),  # misspelt
        ("ServiceMonitor", ("spec", "endpoints", 0), "interval", "15 seconds"),  # bad duration
        ("ServiceMonitor", ("spec",), "endpoints", {"port": "metrics"}),  # not a list
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0), "severity", "page"),  # not a field
        ("PrometheusRule", ("spec", "groups", 0, "rules", 0), "for", "two minutes"),
        ("PrometheusRule", ("spec",), "group", []),  # misspelt
    ],
)
def test_a_wrong_operator_field_is_rejected(
    kind: str, path: tuple[str | int, ...], field: str, value: Any
) -> None:
    doc = copy.deepcopy(_docs()[kind])
    node: Any = doc
    for step in path:
        node = node[step]
    node[field] = value
    errors = _crd_errors(doc)
    assert errors, f"{kind}: {field} = {value!r} was accepted"
    print(errors[0])


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
