"""Fixtures of the deployment tests: the real programs (promtool, amtool,
systemd-analyze, hadolint, Prometheus, Alertmanager) and the stand-in
exporter. A program that is genuinely missing skips its tests with the
reason, unless REPLICATOR_REQUIRE_SERVICES=1 (CI), where it fails them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.standin_exporter import StandinExporter
from tests.integration.conftest import (  # noqa: F401 (fixtures: drills on every backend)
    moto_server,
    s3_endpoint,
    seaweed_server,
    store,
    store_kind,
)
from tests.kafka.conftest import (  # noqa: F401 (fixtures: the live dashboard's Kafka daemon)
    kafka_broker,
    moto_source,
    sasl_canary,
)
from tests.services.alertmanager import AlertmanagerServer, WebhookReceiver, fast_copy
from tests.services.process import ServiceError
from tests.services.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "replicator-rules.yml"
AM_EXAMPLE = DEPLOY / "prometheus" / "alertmanager.example.yml"


def unavailable(reason: str) -> None:
    if os.environ.get("REPLICATOR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required tool unavailable: {reason}")
    pytest.skip(reason)


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        unavailable(f"{program} not installed (apt-get install {package})")
    assert path is not None
    return path


@pytest.fixture
def exporter() -> Iterator[StandinExporter]:
    server = StandinExporter()
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[AlertmanagerServer]:
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    try:
        server = AlertmanagerServer(workdir, fast_copy(AM_EXAMPLE, webhook.port))
    except ServiceError as exc:
        unavailable(str(exc))
    yield server
    server.stop()


def start_prometheus(
    workdir: Path, exporter: StandinExporter, alertmanager: str | None = None
) -> PrometheusServer:
    workdir.mkdir()
    try:
        return PrometheusServer(
            workdir, targets=[exporter.address], rule_files=[RULES], alertmanager=alertmanager
        )
    except ServiceError as exc:
        unavailable(str(exc))
        raise
