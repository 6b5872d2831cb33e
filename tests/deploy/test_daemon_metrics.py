"""The daemon's /metrics against deploy/metrics.txt, the list the alert
rules, the dashboard and the drill are checked against: same family names,
types and labels, in both directions. Skips until the daemon's metrics
module (replicator/metrics.py) is merged; from then on a renamed metric, a
dropped family or a changed label fails here instead of in a dashboard."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.metric_names import families

#: Labels Prometheus' exposition adds to histogram and summary samples.
_SERIES_LABELS = {"le", "quantile"}


def _exposed() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names seen) of every replicator_* family the
    daemon's Telemetry exposes for one configured peer."""
    try:
        metrics: Any = importlib.import_module("replicator.metrics")
    except ImportError:
        pytest.skip("the daemon's replicator/metrics.py is not merged yet; this check then runs")
    telemetry = metrics.Telemetry(["dr-eu"], {"dr-eu": 60.0})
    # As a Kafka daemon's: the source's connection families too.
    telemetry.set_source_link(metrics.SourceLink(lambda: None, lambda: 0))
    text = generate_latest(telemetry.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        # prometheus_client's creation times of counters and histograms parse
        # as families of their own in the text format: not replicator's names.
        if family.name.startswith("replicator_") and not family.name.endswith("_created"):
            labels = {k for s in family.samples for k in s.labels} - _SERIES_LABELS
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = (family.type, labels)
    return out


def test_daemon_families_are_listed() -> None:
    listed = {f.name: f for f in families()}
    for name, (kind, labels) in _exposed().items():
        assert name in listed, f"{name} is exported but not in deploy/metrics.txt"
        assert kind == listed[name].type, name
        assert labels <= set(listed[name].labels), (name, labels)


def test_listed_daemon_families_are_exported() -> None:
    exposed = _exposed()
    # Only what the daemon alone exports (the heartbeat age may also come from
    # `replicator heartbeat`); the alert rules are blind to anything missing.
    expected = {f.name for f in families() if f.exporter == "daemon"}
    assert not expected - set(exposed), f"listed, not exported: {sorted(expected - set(exposed))}"
