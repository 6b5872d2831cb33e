"""The Grafana dashboard: provisioning-ready JSON, and every panel's PromQL
run through a real Prometheus that scrapes the stand-in exporter (every
family of deploy/metrics.txt, fast and without services). Each query must
parse, use only defined metric names, and return series. The same queries
against live programs (two ``replicator run``, one on Kafka, a drill pushed
to a Pushgateway) run in test_live_daemon.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, start_prometheus
from tests.deploy.metric_names import defined_series, referenced_names
from tests.deploy.standin_exporter import StandinExporter
from tests.services.prometheus import PrometheusServer

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "replicator.json"
#: What Grafana substitutes for its variables before sending a query.
VARIABLES = {"$__rate_interval": "5s", "$destination": ".+"}
#: Bound on waiting for the first scrapes (not a performance threshold).
WAIT_S = 60.0


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every panel target."""
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def _expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_dashboard_is_provisioning_ready() -> None:
    dash = _dashboard()
    assert "id" not in dash, "a provisioned dashboard must not pin a database id"
    assert dash["uid"] == "replicator-overview"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    provider = yaml.safe_load((GRAFANA / "provisioning-dashboards.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"


def test_rpo_panel_draws_the_target_as_threshold() -> None:
    panel = next(p for p in _dashboard()["panels"] if p["title"].startswith("RPO"))
    refs = {t["refId"]: t["expr"] for t in panel["targets"]}
    assert "replicator_rpo_target_seconds" in refs["B"]
    config = panel["transformations"][0]
    assert config["id"] == "configFromData" and config["options"]["configRefId"] == "B"
    assert config["options"]["mappings"][0]["handlerKey"] == "threshold1"
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"


def test_every_panel_uses_defined_metrics() -> None:
    defined = defined_series()
    queries = _queries()
    assert len(queries) >= 15
    for title, expr in queries:
        used = referenced_names(expr)
        assert used and used <= defined, f"{title}: undefined {sorted(used - defined)}"


@pytest.mark.integration
def test_every_panel_query_parses_and_returns_series(
    tmp_path: Path, exporter: StandinExporter
) -> None:
    prom = start_prometheus(tmp_path / "prometheus", exporter)
    try:
        _wait_for_rates(prom)
        # The check can fail: a query Prometheus cannot parse is an error.
        assert prom.query("max(replicator_rpo_seconds")["status"] == "error"
        for title, expr in _queries():
            answer = prom.query(_expand(expr))
            assert answer["status"] == "success", f"{title}: {answer.get('error')}"
            series = answer["data"]["result"]
            print(f"{len(series):3d} series  {title}: {_expand(expr)}")
            assert series, f"{title}: no series for {_expand(expr)}"
    finally:
        prom.stop()


def test_a_misspelt_metric_is_caught() -> None:
    # The check above could not fail if the name list accepted anything.
    assert "replicator_rpo_second" not in defined_series()
    assert referenced_names("max(replicator_rpo_second)") - defined_series()


def _wait_for_rates(prom: PrometheusServer) -> None:
    """Until a rate over the stand-in's counters has two samples to use."""
    expr = _expand("sum(rate(replicator_shipped_bytes_total[$__rate_interval]))")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if prom.query(expr)["data"]["result"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"no rate from the stand-in exporter after {WAIT_S} s")
