"""The monitoring path end to end with the real daemon: ``replicator run``
(tests/daemon/harness.py) scraped by Debian's Prometheus evaluating the
shipped rules, Alertmanager with the shipped routing, a webhook served by
the test. Peer b (RPO target 2 s) is made really unwritable (``chattr +i``:
plain permissions do not stop root) while files keep arriving: the
RPO-breach page must arrive for b only; meanwhile every dashboard query is
run against the live scrape; when b is writable again the resolved
notification must arrive.

Skips until the daemon is merged (the harness is the daemon's); the
stand-in-exporter versions (test_alert_paging.py, test_grafana_dashboard.py)
cover the same files until then.
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

from tests.deploy.conftest import RULES, unavailable
from tests.deploy.test_grafana_dashboard import _expand, _queries, _wait_for_rates
from tests.services.alertmanager import AlertmanagerServer, WebhookReceiver
from tests.services.process import ServiceError
from tests.services.prometheus import PrometheusServer

harness: Any = pytest.importorskip(
    "tests.daemon.harness", reason="the daemon (replicator run) is not merged yet"
)
pytestmark = pytest.mark.integration

TARGET_S = 2.0
WAIT_S = 120.0  # hang guard, not a performance threshold
#: Panels fed by other processes or sources than a daemon on a directory.
NOT_FROM_THIS_DAEMON = ("kafka", "heartbeat", "drill")


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
    cfg: Path = harness.write_config(tmp, extra="retry_max_seconds = 1")
    b = f'path = "{tmp / "b"}"\n'
    cfg.write_text(cfg.read_text().replace(b, b + f"rpo_target_seconds = {TARGET_S}\n"))
    return cfg


def _dashboard_queries(prom: PrometheusServer) -> None:
    _wait_for_rates(prom)
    for title, expr in _queries():
        answer = prom.query(_expand(expr))
        assert answer["status"] == "success", f"{title}: {answer.get('error')}"
        series = answer["data"]["result"]
        print(f"{len(series):3d} series  {title}: {_expand(expr)}")
        if not any(word in expr for word in NOT_FROM_THIS_DAEMON):
            assert series, f"{title}: no series from the daemon for {_expand(expr)}"


def test_peer_outage_pages_and_resolves(
    tmp_path: Path, alertmanager: AlertmanagerServer, webhook: WebhookReceiver
) -> None:
    if not _chattr_blocks_root(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    daemon = harness.Daemon(_config(tmp_path), tmp_path / "daemon.log")
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(tmp_path / "src", stop))
    prom: PrometheusServer | None = None
    try:
        daemon.wait_ready()
        harness.wait_until((tmp_path / "b" / "config").exists, "peer b's store", daemon)
        (tmp_path / "prometheus").mkdir()
        try:
            prom = PrometheusServer(
                tmp_path / "prometheus",
                targets=[f"127.0.0.1:{daemon.port}"],
                rule_files=[RULES],
                alertmanager=alertmanager.address,
            )
        except ServiceError as exc:
            unavailable(str(exc))
        writer.start()
        # Some changes complete at both peers first, so every counter has samples.
        harness.wait_until(lambda: _has(daemon, b"replicator_events_total{"), "events", daemon)
        _immutable(tmp_path / "b", True)
        down = time.monotonic()
        firing = webhook.wait_for("/page", "firing", "ReplicatorRPOBreach", WAIT_S)
        paged_s = time.monotonic() - down
        alerts = [a for a in firing["alerts"] if a["labels"]["alertname"] == "ReplicatorRPOBreach"]
        assert [a["labels"]["destination"] for a in alerts] == ["b"]
        assert prom is not None
        _dashboard_queries(prom)
        _immutable(tmp_path / "b", False)
        up = time.monotonic()
        webhook.wait_for("/page", "resolved", "ReplicatorRPOBreach", WAIT_S)
        print(
            f"peer b down: paged after {paged_s:.1f} s (target {TARGET_S} s), resolved "
            f"{time.monotonic() - up:.1f} s after it came back"
        )
        stop.set()
        writer.join()
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        with contextlib.suppress(subprocess.CalledProcessError):
            _immutable(tmp_path / "b", False)
        if prom is not None:
            prom.stop()
        if daemon.proc.poll() is None:
            daemon.kill()
