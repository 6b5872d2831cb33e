"""The shipped alert rules: promtool's syntax check and unit tests (each
alert fires in one case and stays silent in another), the metric names they
use, and a runbook section for every alert."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import AM_EXAMPLE, DEPLOY, RULES, need
from tests.deploy.metric_names import defined_series, referenced_names

RUNBOOK = DEPLOY.parent / "docs" / "runbook.md"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "replicator-rules.test.yml"


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    print(result.stdout, result.stderr)
    return result


def test_promtool_check_rules() -> None:
    promtool = need("promtool", "prometheus")
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests() -> None:
    promtool = need("promtool", "prometheus")
    result = _run([promtool, "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    seen: dict[str, set[bool]] = {}
    for case in cases:
        for check in case["alert_rule_test"]:
            seen.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    for alert in _alerts():
        assert seen.get(str(alert["alert"])) == {True, False}, alert["alert"]


def test_amtool_checks_the_example_config() -> None:
    amtool = need("amtool", "prometheus-alertmanager")
    result = _run([amtool, "check-config", str(AM_EXAMPLE)])
    assert result.returncode == 0


def test_rules_use_only_defined_metrics() -> None:
    defined = defined_series()
    for alert in _alerts():
        used = referenced_names(str(alert["expr"]))
        assert used, alert["alert"]
        assert used <= defined, f"{alert['alert']}: undefined {sorted(used - defined)}"


def test_severity_and_runbook_anchor_for_every_alert() -> None:
    anchors = _runbook_anchors(RUNBOOK)
    for alert in _alerts():
        labels = alert["labels"]
        annotations = alert["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels["severity"] in {"page", "ticket"}, alert["alert"]
        url = str(annotations["runbook_url"])
        assert url == f"docs/runbook.md#{str(alert['alert']).lower()}"
        assert url.split("#", 1)[1] in anchors, f"no runbook section for {alert['alert']}"


def _runbook_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the Markdown headings of ``path``."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_referenced_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b c"}[5m]))) '
        "> on (destination) group_left() max(b_total offset 1h) and absent(up == 1)"
    )
    assert referenced_names(expr) == {"a_bucket", "b_total", "up"}


def test_promtool_checks_the_example_prometheus_config() -> None:
    promtool = need("promtool", "prometheus")
    example = DEPLOY / "prometheus" / "prometheus.example.yml"
    result = _run([promtool, "check", "config", str(example)])
    assert result.returncode == 0
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout
