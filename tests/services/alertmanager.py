"""Debian's Alertmanager (``apt-get install prometheus-alertmanager``) with a
webhook receiver served by the test.

``AlertmanagerServer`` runs the shipped example configuration with two
changes only, both made here and nowhere else: every webhook URL points at
the test's ``WebhookReceiver`` (same path), and the route timings are cut
to a second so a notification arrives in seconds rather than minutes. The
routing tree, matchers, inhibitions and receivers are the shipped ones.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.services.process import ServerProcess, ServiceError, free_port

#: Route timings of the test copy (group_wait, group_interval).
FAST = "1s"


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 collecting Alertmanager's webhook POSTs:
    (path, JSON body) in arrival order."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.put((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output to the test's own lines

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, path: str, status: str, alertname: str, timeout: float) -> dict[str, Any]:
        """The first notification at ``path`` with ``status`` (firing or
        resolved) carrying an alert named ``alertname``; others are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got_path, body = self.received.get(timeout=left)
            except queue.Empty:
                break
            names = {a["labels"].get("alertname") for a in body.get("alerts", [])}
            if got_path == path and body.get("status") == status and alertname in names:
                return body
        raise AssertionError(f"no {status} {alertname} notification at {path} in {timeout} s")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def fast_copy(example: Path, receiver_port: int) -> dict[str, Any]:
    """The example config with its webhooks pointed at ``receiver_port`` and
    fast route timings; nothing else changes."""
    config: dict[str, Any] = yaml.safe_load(example.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(hook["url"])
            hook["url"] = url._replace(netloc=f"127.0.0.1:{receiver_port}").geturl()
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route["group_wait"] = route["group_interval"] = FAST
    return config


class AlertmanagerServer:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        binary = alertmanager_binary()
        if binary is None:
            raise ServiceError(
                "alertmanager not installed (apt-get install prometheus-alertmanager)"
            )
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = ServerProcess(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address={self.address}",
                # A single instance: no gossip port opened, no peers searched.
                "--cluster.listen-address=",
            ],
            workdir / "alertmanager.log",
        )
        self.process.wait_ready(self._ready, "alertmanager")

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        self.process.stop()
