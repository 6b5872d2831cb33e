"""End to end through the real programs: Prometheus (the shipped rules, 1 s
evaluation) scrapes an exporter, sends to Alertmanager (the shipped example
config), which calls a webhook served by this test.

The exporter is the stand-in for the daemon (tests/deploy/standin_exporter.py)
until ``replicator run`` is merged; the test then stops a peer of a running
daemon instead of setting its RPO. What must hold either way: a peer whose
RPO goes over its target pages (severity=page route) for that peer only, and
the resolved notification follows when the RPO falls back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.deploy.conftest import start_prometheus
from tests.deploy.standin_exporter import StandinExporter
from tests.services.alertmanager import AlertmanagerServer, WebhookReceiver

#: Bound on each wait (not a performance threshold: it only ends a hang).
WAIT_S = 90.0
TARGET_S = 60.0


@pytest.mark.integration
def test_rpo_breach_pages_and_resolves(
    tmp_path: Path,
    exporter: StandinExporter,
    alertmanager: AlertmanagerServer,
    webhook: WebhookReceiver,
) -> None:
    for peer in ("dr-eu", "dr-us"):
        exporter.set("replicator_rpo_target_seconds", TARGET_S, destination=peer)
        exporter.set("replicator_rpo_seconds", 2.0, destination=peer)
    prom = start_prometheus(tmp_path / "prometheus", exporter, alertmanager.address)
    try:
        started = time.monotonic()
        # dr-eu falls behind: its oldest pending change is older than the target.
        exporter.set("replicator_rpo_seconds", TARGET_S * 2, destination="dr-eu")
        firing = webhook.wait_for("/page", "firing", "ReplicatorRPOBreach", WAIT_S)
        fired_s = time.monotonic() - started
        alerts = [a for a in firing["alerts"] if a["labels"]["alertname"] == "ReplicatorRPOBreach"]
        assert [a["labels"]["destination"] for a in alerts] == ["dr-eu"]
        assert alerts[0]["labels"]["severity"] == "page"
        assert firing["receiver"] == "replicator-page"
        assert alerts[0]["annotations"]["runbook_url"].endswith("#replicatorrpobreach")

        exporter.set("replicator_rpo_seconds", 0.0, destination="dr-eu")
        resolved = webhook.wait_for("/page", "resolved", "ReplicatorRPOBreach", WAIT_S)
        resolved_s = time.monotonic() - started - fired_s
        assert {a["labels"]["destination"] for a in resolved["alerts"]} == {"dr-eu"}
        print(
            f"RPO breach: paged {fired_s:.1f} s after the RPO crossed its target, resolved "
            f"{resolved_s:.1f} s after it fell (1 s scrape/evaluation, 1 s route timings)"
        )
    finally:
        prom.stop()
