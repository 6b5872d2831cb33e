"""Debian's Prometheus (``apt-get install prometheus``) and Pushgateway
(``prometheus-pushgateway``), each on a free 127.0.0.1 port.

The configuration is written to a temporary directory with short scrape and
evaluation intervals (1 s), so a test sees a scraped value or a rule's
state change within seconds. The server is stopped by its PID (its own
process group), never by name.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.services.process import ServerProcess, ServiceError, free_port

#: Scrape and rule evaluation interval of the test server.
INTERVAL = "1s"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def http_json(url: str, data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


class PrometheusServer:
    """A running Prometheus scraping ``targets`` as job ``job``, evaluating
    ``rule_files`` and sending alerts to ``alertmanager`` (host:port);
    ``pushgateway`` (host:port) is scraped as job ``pushgateway`` with
    ``honor_labels``, as its documentation asks."""

    def __init__(
        self,
        workdir: Path,
        *,
        targets: Sequence[str] = (),
        job: str = "replicator",
        rule_files: Sequence[Path] = (),
        alertmanager: str | None = None,
        pushgateway: str | None = None,
    ) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise ServiceError("prometheus not installed (apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = workdir / "prometheus.yml"
        # YAML is a superset of JSON: no YAML writer needed.
        config = _config(targets, job, rule_files, alertmanager)
        if pushgateway is not None:
            config["scrape_configs"].append(
                {**config["scrape_configs"][0], "job_name": "pushgateway", "honor_labels": True}
                | {"static_configs": [{"targets": [pushgateway]}]}
            )
        config_path.write_text(json.dumps(config))
        self.process = ServerProcess(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Re-send firing alerts every second, not every minute.
                "--rules.alert.resend-delay=1s",
            ],
            workdir / "prometheus.log",
        )
        self.process.wait_ready(self._ready, "prometheus")

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the decoded JSON body, whatever its status.

        Prometheus answers a query it cannot parse with HTTP 400 and a JSON
        body (status "error", errorType "bad_data"): returned, not raised."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            return http_json(url)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise ServiceError(f"{url}: HTTP {exc.code}: {body[:200]!r}") from exc

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)

    def stop(self) -> None:
        self.process.stop()


def _config(
    targets: Sequence[str], job: str, rule_files: Sequence[Path], alertmanager: str | None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": INTERVAL,
                "scrape_timeout": INTERVAL,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


class PushgatewayServer:
    """A Pushgateway without persistence (its state dies with it)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
        if binary is None:
            raise ServiceError("pushgateway not installed (apt-get install prometheus-pushgateway)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ServerProcess(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="],
            workdir / "pushgateway.log",
        )
        self.process.wait_ready(self._ready, "pushgateway")

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        self.process.stop()
