"""A real Prometheus scrapes the daemon's endpoint (it asks for OpenMetrics,
so this is the format it really gets), and ``promtool check metrics`` lints
the exposition.

The one alert rule the design relies on, ``rpo_seconds > on(destination)
rpo_target_seconds``, is evaluated by Prometheus itself over the scraped
series: it must name the late peer and only it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from replicator.events import ChangeEvent, Kind
from replicator.metrics import MetricsServer, Telemetry, serve
from tests.integration.conftest import _unavailable
from tests.services.process import ServerProcess, free_port

pytestmark = pytest.mark.integration

#: Hang guard (Prometheus starts in about a second), not a performance bound.
GUARD_S = 120.0


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Telemetry, MetricsServer]]:
    telemetry = Telemetry(["peer-a", "peer-b"], {"peer-a": 30.0, "peer-b": 30.0})
    late = ChangeEvent("src", "b", "k", Kind.CREATED, time.time_ns() - 120 * 10**9)
    telemetry.pending("peer-b", late, 10)
    server = await serve(telemetry, "127.0.0.1:0")
    try:
        yield telemetry, server
    finally:
        await server.close()


def _start_prometheus(tmp: Path, target: str) -> tuple[ServerProcess, str]:
    if shutil.which("prometheus") is None:
        _unavailable("prometheus is not installed (Debian package `prometheus`)")
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: replicator\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    argv = [
        "prometheus",
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return ServerProcess(argv, tmp / "prometheus.log"), f"http://127.0.0.1:{port}"


async def _query(session: aiohttp.ClientSession, url: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(url + "/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_and_evaluates_the_rpo_rule(
    endpoint: tuple[Telemetry, MetricsServer], tmp_path: Path
) -> None:
    _, server = endpoint
    prometheus, url = _start_prometheus(tmp_path, f"127.0.0.1:{server.port}")
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + GUARD_S
            rpo: list[dict[str, Any]] = []
            while not rpo and time.monotonic() < deadline:
                assert prometheus.proc.poll() is None, prometheus.log_tail()
                await asyncio.sleep(0.5)
                try:
                    rpo = await _query(session, url, "replicator_rpo_seconds")
                except aiohttp.ClientError:
                    continue  # not listening yet
            assert rpo, f"no scrape after {GUARD_S:.0f} s:\n{prometheus.log_tail()}"
            up = await _query(session, url, 'up{job="replicator"}')
            late = await _query(
                session,
                url,
                "replicator_rpo_seconds > on(destination) replicator_rpo_target_seconds",
            )
    finally:
        prometheus.stop()
    assert up[0]["value"][1] == "1"
    by_peer = {r["metric"]["destination"]: float(r["value"][1]) for r in rpo}
    assert by_peer["peer-a"] == 0.0
    assert by_peer["peer-b"] >= 120.0
    assert [r["metric"]["destination"] for r in late] == ["peer-b"]


async def test_promtool_finds_nothing_to_lint(endpoint: tuple[Telemetry, MetricsServer]) -> None:
    if shutil.which("promtool") is None:
        _unavailable("promtool is not installed (Debian package `prometheus`)")
    telemetry, server = endpoint
    telemetry.outcome("fswatch", "durable")
    telemetry.destination_error("peer-a", "put_pack", "TransientStoreError")
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.read()
    lint = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
