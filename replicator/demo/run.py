"""The demo from start to verdict: daemon up, job, drain, SIGTERM, check."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from replicator import config
from replicator.demo.check import PeerCheck, check_peers
from replicator.demo.daemon import DaemonProcess, free_port, write_config
from replicator.demo.job import TrainingJob
from replicator.demo.view import LiveView, summary_rows

#: After the job ends, how long the daemon may take to make the rest durable.
SETTLE_SECONDS = 30.0


@dataclass
class DemoResult:
    seconds: float = 0.0
    daemon_exit: int | None = None
    settled: bool = False
    versions_written: int = 0
    removals: int = 0
    bytes_written: int = 0
    steps: int = 0
    checks: list[PeerCheck] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "daemon_exit": self.daemon_exit,
            "versions_written": self.versions_written,
            "removals": self.removals,
            "bytes_written": self.bytes_written,
            "checkpoints": self.steps,
            "peers": self.rows,
            "problems": self.problems + [p for c in self.checks for p in c.problems],
        }


async def run_demo(root: Path, duration: float, console: Console) -> DemoResult:
    started = time.monotonic()
    result = DemoResult()
    port = free_port()
    cfg = write_config(root, port=port)
    settings = config.load(cfg)
    daemon = DaemonProcess(cfg, root / "daemon.log", port)
    # About a dozen saves whatever the duration, so short runs delete too.
    every = min(5.0, max(1.0, duration / 12))
    job = TrainingJob(root / "source", root / "kept", save_every=every)
    await daemon.start()
    view = LiveView(daemon, job, console, duration)
    try:
        await _train(daemon, job, view, duration, result)
    finally:
        result.daemon_exit = await daemon.stop()
    if result.daemon_exit != 0:
        result.problems.append(f"the daemon exited with code {result.daemon_exit} after SIGTERM")
    if not result.settled:
        result.problems.append(f"changes still pending {SETTLE_SECONDS:g} s after the job ended")
    job.save_log(root / "versions.jsonl")
    result.versions_written = sum(1 for v in job.versions if not v.removed)
    result.removals = sum(1 for v in job.versions if v.removed)
    result.bytes_written, result.steps = job.bytes_written, job.step // 100
    result.checks = await check_peers(settings, job.versions, root / "restored")
    result.rows = summary_rows(result.checks, daemon.durable(), view.max_rpo)
    result.seconds = time.monotonic() - started
    return result


async def _train(
    daemon: DaemonProcess, job: TrainingJob, view: LiveView, duration: float, result: DemoResult
) -> None:
    """The job runs in a thread while the view polls; then the rest drains."""
    stop_view, stop_job = asyncio.Event(), threading.Event()
    view_task = asyncio.create_task(view.run(stop_view))
    try:
        await asyncio.to_thread(job.run, duration, stop_job)
        result.settled = await daemon.wait_settled(SETTLE_SECONDS)
    finally:
        stop_job.set()  # also on Ctrl-C: the thread sees it within a second
        stop_view.set()
        with contextlib.suppress(asyncio.CancelledError):
            await view_task
