"""``replicator status``: ask the running daemon how far behind each peer is.

Reads ``/status`` at ``service.metrics_address``. Per peer: RPO against its
target, pending changes and bytes, the event time of the newest durable
change, errors; for a Kafka source, whether it is connected and how many
times its consumer was replaced. A table on a terminal, JSON otherwise (or
with ``--json``).

A format 3 peer's segments that the daemon could not read at its last
reconcile (garbage over a segment, a flipped byte) are named, one line
each: the manifests in them are invisible to every reader.

Exit codes: 0 every peer within its target and no damaged segment; 1 a peer
is over its RPO target or holds a damaged segment; 2 no daemon answers (or
the configuration is bad).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from replicator import config
from replicator.commands.common import config_option, exit_codes
from replicator.commands.output import echo_json
from replicator.errors import ReplicatorError
from replicator.metrics_http import DEFAULT_ADDRESS, parse_address

if TYPE_CHECKING:
    from rich.table import Table

TIMEOUT_SECONDS = 5.0


class NoDaemonError(ReplicatorError):
    """Nothing answered at the metrics address."""

    exit_code = 2


def metrics_address(config_path: Path | None) -> str:
    """``service.metrics_address`` of the configuration, else the default.

    Without ``--config`` a missing default file is not an error: the daemon
    may run on the embedded defaults."""
    path = config_path or config.default_path()
    if config_path is None and not path.exists():
        return DEFAULT_ADDRESS
    settings = config.load(path)
    service = getattr(settings, "service", None)
    return str(getattr(service, "metrics_address", DEFAULT_ADDRESS))


def fetch_status(address: str, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    host, port = parse_address(address)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{port}/status"
    try:
        # The URL is built from host:port above: always plain http, no file:.
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.load(resp)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NoDaemonError(f"no replicator daemon answers at {address}: {reason}") from exc
    if not isinstance(data, dict) or "destinations" not in data:
        raise NoDaemonError(f"{address} answered, but not with a replicator status")
    return data


def over_target(status: dict[str, Any]) -> list[str]:
    return [name for name, peer in status["destinations"].items() if peer.get("over_target")]


def damaged_segments(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(peer, segment, why) of every segment a peer could not read."""
    return [
        (name, str(d.get("segment", "")), str(d.get("why", "")))
        for name, peer in status["destinations"].items()
        for d in peer.get("damaged_segments", ())
    ]


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _source_line(source: dict[str, Any]) -> str | None:
    """A source holding a connection (Kafka): whether it is connected, how often it reconnected."""
    if "connected" not in source:
        return None
    state = "connected" if source["connected"] else f"[red]not connected[/red]: {source['problem']}"
    return f"source {state}; {source.get('reconnects', 0)} reconnect(s)"


def render_table(status: dict[str, Any]) -> Table:
    from rich.table import Table  # noqa: PLC0415 - rich only for a terminal

    ready = "ready" if status.get("ready") else f"not ready: {status.get('reason', '')}"
    table = Table(title=f"replicator {status.get('version', '?')}: {ready}")
    for column in ("peer", "up", "RPO", "target", "pending", "pending bytes"):
        table.add_column(column, justify="left" if column == "peer" else "right")
    table.add_column("last durable event")
    table.add_column("errors", justify="right")
    table.caption = _source_line(status.get("source", {}))
    for name, peer in status["destinations"].items():
        target = peer.get("rpo_target_seconds")
        rpo = f"{peer['rpo_seconds']:.1f} s"
        table.add_row(
            name,
            "yes" if peer.get("up") else "[red]no[/red]",
            f"[red]{rpo}[/red]" if peer.get("over_target") else rpo,
            "-" if target is None else f"{target:g} s",
            str(peer["pending_events"]),
            _size(peer["pending_bytes"]),
            _when(peer.get("last_durable_event_time")),
            str(peer.get("errors", 0)),
        )
    return table


@click.command("status")
@config_option
@click.option("--address", help="host:port of the daemon (default: service.metrics_address).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON even on a terminal.")
def status_command(*, config_path: Path | None, address: str | None, as_json: bool) -> None:
    """Per peer: RPO against target, pending changes, last durable event."""
    with exit_codes():
        status = fetch_status(address or metrics_address(config_path))
    if as_json or not sys.stdout.isatty():
        echo_json(status)
    else:
        from rich.console import Console  # noqa: PLC0415 - rich only for a terminal

        Console().print(render_table(status))
    late = over_target(status)
    if late:
        click.echo(f"over RPO target: {', '.join(late)}", err=True)
    damaged = damaged_segments(status)
    for name, segment, why in damaged:
        click.echo(f"damaged segment at {name!r}: {segment}: {why}", err=True)
    sys.exit(1 if late or damaged else 0)
