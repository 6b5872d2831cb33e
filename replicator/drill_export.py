"""Exporting a drill's result to Prometheus: the drill is a separate process
from the daemon, so nothing else would. Two ways, same metric families
(``replicator_drill_*{destination}``, listed in deploy/metrics.txt):

- a node-exporter textfile (``--textfile``): systemd timers on a host;
- a Prometheus Pushgateway (``--pushgateway``): Kubernetes CronJobs.

A failed drill never erases the last success: the textfile keeps the previous
file's success time and RTO, and the Pushgateway push of a failure replaces
only the metrics it carries (POST), which omit those two.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from replicator.drill import DrillReport
from replicator.errors import ReplicatorError

#: Pushgateway job label of drill results.
PUSH_JOB = "replicator-drill"


class ExportError(ReplicatorError):
    """The drill ran, but its result could not be exported."""


_HELP = {
    "rto_seconds": "Wall-clock time of the last successful drill's restore.",
    "last_success_timestamp_seconds": "When the last successful drill started (Unix time).",
    "last_run_timestamp_seconds": "When the last drill started, successful or not (Unix time).",
    "success": "1 when the last drill restored and verified everything, 0 otherwise.",
    "restored_bytes": "Object bytes the last drill restored and verified.",
    "restored_objects": "Objects the last drill restored and verified.",
}


def textfile(report: DrillReport, previous: str = "") -> str:
    """The node-exporter textfile for ``report``. A failed drill keeps the
    previous file's last success time and RTO (``previous``: its text), so a
    failure never looks like a recent success, nor erases the last one."""
    values: dict[str, float | None] = {
        "rto_seconds": report.rto_seconds if report.ok else _previous(previous, "rto_seconds"),
        "last_success_timestamp_seconds": (
            report.started_at
            if report.ok
            else _previous(previous, "last_success_timestamp_seconds")
        ),
        "last_run_timestamp_seconds": report.started_at,
        "success": 1.0 if report.ok else 0.0,
        "restored_bytes": float(report.bytes),
        "restored_objects": float(report.objects),
    }
    label = _escape(report.destination)
    lines = []
    for name, value in values.items():
        if value is None:
            continue
        lines += [
            f"# HELP replicator_drill_{name} {_HELP[name]}",
            f"# TYPE replicator_drill_{name} gauge",
            f'replicator_drill_{name}{{destination="{label}"}} {value!r}',
        ]
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _previous(text: str, name: str) -> float | None:
    prefix = f"replicator_drill_{name}{{"
    for line in text.splitlines():
        if line.startswith(prefix):
            try:
                return float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                return None
    return None


def write_textfile(path: Path, report: DrillReport) -> None:
    """Replace ``path`` atomically (node-exporter never reads half a file),
    readable by all: the collector runs as another user."""
    try:
        _write_textfile(path, report)
    except OSError as exc:
        raise ExportError(f"--textfile {path}: cannot write the drill result: {exc}") from exc


def _write_textfile(path: Path, report: DrillReport) -> None:
    try:
        previous = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        previous = ""
    publish(path, textfile(report, previous))


def publish(path: Path, text: str) -> None:
    """Replace the textfile ``path`` with ``text``: atomically (node-exporter
    never reads half a file) and readable by all (it runs as another user)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            os.fchmod(out.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def push(url: str, report: DrillReport, *, timeout: float = 10.0) -> None:
    """Send ``report`` to the Pushgateway at ``url``, grouped by job and
    destination: PUT (replace the group) after a success, POST (replace only
    the pushed metrics) after a failure."""
    name = base64.urlsafe_b64encode(report.destination.encode()).decode() or "="
    group = f"{url.rstrip('/')}/metrics/job/{PUSH_JOB}/destination@base64/{name}"
    request = urllib.request.Request(  # noqa: S310 (the operator's URL, http or https)
        group,
        data=textfile(report).encode(),
        method="PUT" if report.ok else "POST",
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ExportError(f"--pushgateway {url}: cannot push the drill result: {reason}") from exc
