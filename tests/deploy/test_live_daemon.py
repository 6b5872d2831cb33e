"""The monitoring path end to end with the real programs: ``replicator run``
on a directory (tests/daemon/harness.py, its heartbeat canary on) scraped
by Debian's Prometheus evaluating the shipped rules, Alertmanager with the
shipped routing, a webhook served by the test. Peer b (RPO target 2 s) is
made really unwritable (``chattr +i``: plain permissions do not stop root)
while files keep arriving: the RPO-breach page must arrive for b only; when
b is writable again the resolved notification must arrive.

Meanwhile every dashboard panel's query must parse and return series from
the live scrape, which also covers a second ``replicator run`` on an S3
bucket followed through the real Kafka broker (consumer lag, gaps) and a
Pushgateway that a real ``replicator drill`` pushed to.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import harness
from tests.deploy import live_sources
from tests.deploy.conftest import RULES, unavailable
from tests.deploy.test_grafana_dashboard import _expand, _queries, _wait_for_rates
from tests.services.alertmanager import AlertmanagerServer, WebhookReceiver
from tests.services.kafka.server import KafkaBroker
from tests.services.moto_server import MotoServer
from tests.services.process import ServiceError
from tests.services.prometheus import PrometheusServer, PushgatewayServer

pytestmark = pytest.mark.integration

TARGET_S = 2.0
WAIT_S = 120.0  # hang guard, not a performance threshold
HEARTBEAT_S = 0.5
#: Hang guard per dashboard query (a few scrapes), not a performance threshold.
PANEL_WAIT_S = 30.0


def _immutable(root: Path, on: bool) -> None:
    dirs = [str(p) for p in [root, *root.rglob("*")] if p.is_dir()]
    subprocess.run(["chattr", "+i" if on else "-i", *dirs], check=True, capture_output=True)


def _chattr_blocks_root(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    try:
        (probe / "x").touch()
    except PermissionError:
        return done.returncode == 0
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
    return False


def _writer(src: Path, stop: threading.Event) -> None:
    i = 0
    while not stop.wait(0.2):
        tmp = src / f"w/{i:05d}.bin.tmp"
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_bytes(os.urandom(20_000))
        os.replace(tmp, src / f"w/{i:05d}.bin")
        i += 1


def _has(daemon: Any, text: bytes) -> bool:
    code, body = daemon.get("/metrics")
    return code == 200 and text in body


def _config(tmp: Path) -> Path:
    extra = f"retry_max_seconds = 1\nheartbeat_interval_seconds = {HEARTBEAT_S}"
    cfg: Path = harness.write_config(tmp, extra=extra)
    b = f'path = "{tmp / "b"}"\n'
    cfg.write_text(cfg.read_text().replace(b, b + f"rpo_target_seconds = {TARGET_S}\n"))
    return cfg


def _dashboard_queries(prom: PrometheusServer) -> None:
    """Every panel's query parses and returns series; the panels counted.
    A query is retried until the hang guard: a series born at a scrape
    (a rate, an increase) needs two samples first."""
    _wait_for_rates(prom)
    queries = _queries()
    for title, expr in queries:
        deadline = time.monotonic() + PANEL_WAIT_S
        while True:
            answer = prom.query(_expand(expr))
            assert answer["status"] == "success", f"{title}: {answer.get('error')}"
            series = answer["data"]["result"]
            if series or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"{len(series):3d} series  {title}: {_expand(expr)}")
        assert series, f"{title}: no series from the live scrape for {_expand(expr)}"
    panels = {title for title, _expr in queries}
    print(f"{len(queries)} queries of {len(panels)} panels: every one returned series")


def _prometheus(
    tmp: Path, daemons: list[Any], alertmanager: str, pushgateway: str
) -> PrometheusServer:
    (tmp / "prometheus").mkdir()
    try:
        return PrometheusServer(
            tmp / "prometheus",
            targets=[f"127.0.0.1:{d.port}" for d in daemons],
            rule_files=[RULES],
            alertmanager=alertmanager,
            pushgateway=pushgateway,
        )
    except ServiceError as exc:
        unavailable(str(exc))
        raise


def _pushgateway(tmp: Path) -> PushgatewayServer:
    (tmp / "pushgateway").mkdir()
    try:
        return PushgatewayServer(tmp / "pushgateway")
    except ServiceError as exc:
        unavailable(str(exc))
        raise


def test_peer_outage_pages_and_resolves(
    tmp_path: Path,
    alertmanager: AlertmanagerServer,
    webhook: WebhookReceiver,
    kafka_broker: KafkaBroker,
    moto_source: MotoServer,
) -> None:
    if not _chattr_blocks_root(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    daemon = harness.Daemon(_config(tmp_path), tmp_path / "daemon.log")
    gateway = _pushgateway(tmp_path)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(tmp_path / "src", stop))
    prom: PrometheusServer | None = None
    try:
        daemon.wait_ready()
        harness.wait_until((tmp_path / "b" / "config").exists, "peer b's store", daemon)
        kafka = live_sources.kafka_daemon(tmp_path / "kafka", kafka_broker, moto_source).daemon
        prom = _prometheus(
            tmp_path, [daemon, kafka], alertmanager.address, f"127.0.0.1:{gateway.port}"
        )
        writer.start()
        # Some changes complete at both peers first, so every counter has samples.
        harness.wait_until(lambda: _has(daemon, b"replicator_events_total{"), "events", daemon)
        live_sources.drill(daemon.cfg, "a", tmp_path / "scratch", gateway.url)
        _outage(tmp_path, webhook, prom)
        stop.set()
        writer.join()
        assert daemon.stop() == 0, daemon.log_tail()
        assert kafka.stop() == 0, kafka.log_tail()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        with contextlib.suppress(subprocess.CalledProcessError):
            _immutable(tmp_path / "b", False)
        for server in (prom, gateway):
            if server is not None:
                server.stop()
        harness.Daemon.reap()


def _outage(tmp: Path, webhook: WebhookReceiver, prom: PrometheusServer) -> None:
    """b unwritable: paged for b only, every panel has series; back: resolved."""
    _immutable(tmp / "b", True)
    down = time.monotonic()
    firing = webhook.wait_for("/page", "firing", "ReplicatorRPOBreach", WAIT_S)
    paged_s = time.monotonic() - down
    alerts = [a for a in firing["alerts"] if a["labels"]["alertname"] == "ReplicatorRPOBreach"]
    assert [a["labels"]["destination"] for a in alerts] == ["b"]
    _dashboard_queries(prom)
    ages = prom.query("replicator_heartbeat_age_seconds")["data"]["result"]
    shown = {f"{a['metric']['instance']} {a['metric']['destination']}": a["value"][1] for a in ages}
    print(f"heartbeat ages with b down: {shown}")
    _immutable(tmp / "b", False)
    up = time.monotonic()
    webhook.wait_for("/page", "resolved", "ReplicatorRPOBreach", WAIT_S)
    print(
        f"peer b down: paged after {paged_s:.1f} s (target {TARGET_S} s), resolved "
        f"{time.monotonic() - up:.1f} s after it came back"
    )
