"""The demo's live view (per peer: RPO, pending, shipped, deduplicated,
read from the daemon's /status) and its closing summary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from replicator.demo.check import PeerCheck
from replicator.demo.daemon import DaemonProcess, Durable
from replicator.demo.job import TrainingJob

POLL_SECONDS = 0.25
#: Off a terminal, one progress line per this many seconds.
LINE_SECONDS = 5.0


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class LiveView:
    daemon: DaemonProcess
    job: TrainingJob
    console: Console
    duration: float
    max_rpo: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll /status until ``stop``; draw on a terminal, print lines otherwise."""
        if self.console.is_terminal:
            with Live(self.render(), console=self.console, refresh_per_second=4) as live:
                while not await self._tick(stop):
                    live.update(self.render())
                live.update(self.render())
            return
        next_line = 0.0
        while not await self._tick(stop):
            if time.monotonic() >= next_line:
                click.echo(self.line(), err=True)
                next_line = time.monotonic() + LINE_SECONDS

    async def _tick(self, stop: asyncio.Event) -> bool:
        """One poll; True once ``stop`` is set (after a last poll: the final state)."""
        await self._poll()
        try:
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        except TimeoutError:
            return False
        await self._poll()
        return True

    async def _poll(self) -> None:
        status = await self.daemon.status()
        if status is not None:
            self.last = status
            for name, peer in status["destinations"].items():
                self.max_rpo[name] = max(self.max_rpo.get(name, 0.0), peer["rpo_seconds"])

    def _job_line(self) -> str:
        step, versions, written = self.job.progress()
        elapsed = time.monotonic() - self.started
        return (
            f"training job: {elapsed:4.0f}/{self.duration:g} s, step {step}, "
            f"{versions} versions written, {mib(written)}"
        )

    def line(self) -> str:
        parts = [self._job_line()]
        for name, peer in (self.last or {}).get("destinations", {}).items():
            parts.append(
                f"{name}: rpo {peer['rpo_seconds']:.1f} s, pending {peer['pending_events']}, "
                f"shipped {mib(peer['shipped_bytes'])}, dedup {mib(peer['deduplicated_bytes'])}"
            )
        return " | ".join(parts)

    def render(self) -> Group:
        table = Table(title="replicator demo: the daemon, live (from /status)")
        for column in ("peer", "RPO", "max RPO", "target", "pending", "durable"):
            table.add_column(column, justify="left" if column == "peer" else "right")
        table.add_column("shipped", justify="right")
        table.add_column("deduplicated", justify="right")
        for name, peer in (self.last or {}).get("destinations", {}).items():
            rpo = f"{peer['rpo_seconds']:.1f} s"
            table.add_row(
                name,
                Text(rpo, style="red" if peer["over_target"] else "green"),
                f"{self.max_rpo.get(name, 0.0):.1f} s",
                f"{peer['rpo_target_seconds']:g} s",
                str(peer["pending_events"]),
                str(peer["durable_events"]),
                mib(peer["shipped_bytes"]),
                mib(peer["deduplicated_bytes"]),
            )
        return Group(Text(self._job_line()), table)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_rows(
    checks: list[PeerCheck], durable: list[Durable], max_rpo: dict[str, float]
) -> list[dict[str, Any]]:
    rows = []
    for check in checks:
        mine = [d for d in durable if d.destination == check.name]
        shipped = sum(d.shipped_bytes for d in mine)
        latencies = [d.latency_seconds for d in mine]
        rows.append(
            {
                "peer": check.name,
                "versions_restored": check.restored,
                "tombstones": check.tombstones,
                "whole_object_bytes": check.object_bytes,
                "shipped_bytes": shipped,
                "ratio": shipped / check.object_bytes if check.object_bytes else 0.0,
                "max_rpo_seconds": max_rpo.get(check.name, 0.0),
                "latency_p50_seconds": quantile(latencies, 0.50),
                "latency_p99_seconds": quantile(latencies, 0.99),
                "problems": len(check.problems),
            }
        )
    return rows


def summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="every version restored from each peer and compared with the job's copy")
    headers = ["peer", "versions", "tombstones", "whole-object copy", "shipped", "ratio"]
    headers += ["max RPO", "latency p50", "p99", "mismatches"]
    for h in headers:
        table.add_column(h, justify="left" if h == "peer" else "right")
    for r in rows:
        table.add_row(
            r["peer"],
            str(r["versions_restored"]),
            str(r["tombstones"]),
            mib(r["whole_object_bytes"]),
            mib(r["shipped_bytes"]),
            f"{r['ratio']:.3f}",
            f"{r['max_rpo_seconds']:.2f} s",
            f"{r['latency_p50_seconds']:.3f} s",
            f"{r['latency_p99_seconds']:.3f} s",
            Text(str(r["problems"]), style="red" if r["problems"] else "green"),
        )
    return table
