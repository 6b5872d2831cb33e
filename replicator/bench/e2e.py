"""``replicator bench e2e``: a steady load through the running daemon.

The real daemon (``replicator run``, a child process) watches a directory
and keeps two directory peers. The bench writes small objects (1 KiB to
1 MiB, log-uniform) at a steady rate and a large object now and then, each
saved temp-then-rename under a new key, and logs each write's event time
(ctime). Every 100 ms it scrapes ``replicator_rpo_seconds`` from /metrics.
At the end it reports, from its own write log and the daemon's log of
durable versions: event -> durable at both peers p50/p99/max per size
class, objects/s and MB/s sustained, and the RPO error (exported minus the
true age of the oldest write not yet durable at that peer).

Exit 0 when every write became durable at both peers, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families

from replicator.bench.e2e_stats import (
    Sample,
    Write,
    covered_at,
    latencies,
    quantiles,
    rpo_error,
    throughput,
)
from replicator.config import FsDestination, FsSource, Settings, Store
from replicator.demo.daemon import PEERS, DaemonProcess, Durable, free_port, write_config
from replicator.pipeline.backfill import run_backfill

SMALL_MIN, SMALL_MAX = 1024, 1024 * 1024
SAMPLE_SECONDS = 0.1
SETTLE_SECONDS = 120.0


@dataclass
class Load:
    """Writes new objects under ``root`` at a steady pace, in a thread."""

    root: Path
    rate: float
    large_size: int
    large_every: float
    seed: int = 0
    writes: list[Write] = field(default_factory=list)

    def run(self, duration: float, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        start = time.monotonic()
        small = large = 0
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            if self.large_every and elapsed >= large * self.large_every:
                self._write(f"large/obj-{large:05d}", "large", rng.randbytes(self.large_size))
                large += 1
            due = int(elapsed * self.rate) + 1
            while small < due:
                size = int(math.exp(rng.uniform(math.log(SMALL_MIN), math.log(SMALL_MAX))))
                self._write(
                    f"small/{small // 1000:03d}/obj-{small:06d}", "small", rng.randbytes(size)
                )
                small += 1
            stop.wait(max(0.0, (small / self.rate) - (time.monotonic() - start)))

    def _write(self, key: str, size_class: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        ctime = os.stat(path).st_ctime_ns
        self.writes.append(Write(key, size_class, len(data), ctime))


async def sample_rpo(daemon: DaemonProcess, stop: asyncio.Event, out: list[Sample]) -> None:
    """Scrape /metrics every 100 ms.

    The instant of a sample is when the answer arrived: the value is
    computed just before it leaves, however long the request waited for a
    busy daemon (a midpoint would date it too early)."""
    while not stop.is_set():
        before = time.time_ns()
        text = await daemon.get("/metrics")
        at = time.time_ns()
        took = (at - before) / 1e9
        if text is not None:
            for family in text_string_to_metric_families(text):
                if family.name == "replicator_rpo_seconds":
                    out.extend(
                        Sample(at, s.labels["destination"], s.value, took) for s in family.samples
                    )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


async def run_bench(root: Path, duration: float, load: Load) -> dict[str, Any]:
    port = free_port()
    cfg = write_config(root, port=port)
    daemon = DaemonProcess(cfg, root / "daemon.log", port)
    await daemon.start()
    samples: list[Sample] = []
    stop_sampling, stop_load = asyncio.Event(), threading.Event()
    sampler = asyncio.create_task(sample_rpo(daemon, stop_sampling, samples))
    try:
        await asyncio.to_thread(load.run, duration, stop_load)
        settled = await daemon.wait_settled(SETTLE_SECONDS)
    finally:
        stop_load.set()
        stop_sampling.set()
        await sampler
        code = await daemon.stop()
    result = report(load.writes, daemon.durable(), samples, settled=settled, daemon_exit=code)
    result["large_vs_backfill"] = await large_vs_backfill(root, load.writes, daemon)
    return result


async def large_vs_backfill(
    root: Path, writes: list[Write], daemon: DaemonProcess
) -> dict[str, float] | None:
    """Large objects' MB/s through the daemon (size / event -> durable at
    both peers) against ``backfill`` of the same files to two fresh peers."""
    large = [w for w in writes if w.size_class == "large"]
    if not large:
        return None
    covered = covered_at(daemon.durable())
    seconds = 0.0
    for w in large:
        done = max(covered.get((p, w.key, w.event_time_ns), 0) for p in PEERS)
        seconds += max(0.0, (done - w.event_time_ns) / 1e9)
    settings = Settings(
        source=FsSource(path=root / "source", bucket="demo"),
        destinations=[FsDestination(name=f"fresh-{p}", path=root / f"fresh-{p}") for p in PEERS],
        store=Store(cache_dir=root / "fresh-cache"),
    )
    started = time.monotonic()
    summary = await run_backfill(settings, prefix="large/")
    backfill_seconds = time.monotonic() - started
    nbytes = sum(w.size for w in large)
    daemon_mb_s = nbytes / max(seconds, 1e-9) / 1e6
    backfill_mb_s = summary.source_bytes / max(backfill_seconds, 1e-9) / 1e6
    return {
        "daemon_mb_per_second": round(daemon_mb_s, 3),
        "backfill_mb_per_second": round(backfill_mb_s, 3),
        "ratio": round(daemon_mb_s / backfill_mb_s, 3) if backfill_mb_s else 0.0,
    }


def report(
    writes: list[Write],
    durable: list[Durable],
    samples: list[Sample],
    *,
    settled: bool,
    daemon_exit: int,
) -> dict[str, Any]:
    """The figures common to every source, from the write and durable logs."""
    covered = covered_at(durable)
    latency, missing = latencies(writes, covered, PEERS)
    return {
        "objects": len(writes),
        "bytes": sum(w.size for w in writes),
        "not_durable": missing,
        "settled": settled,
        "daemon_exit": daemon_exit,
        "latency_seconds": latency,
        "throughput": throughput(writes, durable),
        "rpo_samples": len(samples),
        "scrape_seconds": quantiles([s.took_seconds for s in samples if s.destination == PEERS[0]]),
        "rpo_error_seconds": rpo_error(writes, covered, samples),
        # The same version made durable at the same peer again (a source
        # that delivered it twice): harmless, but pending meanwhile for RPO.
        "durable_repeats": len(durable) - len(covered),
    }


def print_result(result: dict[str, Any]) -> None:
    t = result["throughput"]
    click.echo(
        f"{result['objects']} objects, {result['bytes'] / 1e6:.1f} MB: "
        f"{t['objects_per_second']:.1f} objects/s, {t['mb_per_second']:.1f} MB/s sustained"
    )
    for size_class, q in result["latency_seconds"].items():
        click.echo(
            f"event -> durable at both peers, {size_class} ({q['count']}): "
            f"p50 {q['p50']:.3f} s, p99 {q['p99']:.3f} s, max {q['max']:.3f} s"
        )
    for peer, q in result["rpo_error_seconds"].items():
        click.echo(
            f"RPO error {peer} ({q['count']} samples): |exported - true| p50 {q['p50']:.3f} s, "
            f"p99 {q['p99']:.3f} s, max {q['max']:.3f} s "
            f"(most under {q['most_under']:.3f} s, most over {q['most_over']:.3f} s; "
            f"against the truth when asked or answered: p99 {q['p99_either_end']:.3f} s, "
            f"max {q['max_either_end']:.3f} s)"
        )
    sc = result["scrape_seconds"]
    click.echo(
        f"/metrics scrape took p50 {sc['p50']:.3f} s, p99 {sc['p99']:.3f} s, max {sc['max']:.3f} s"
    )
    lb = result.get("large_vs_backfill")
    if lb:
        click.echo(
            f"large objects: {lb['daemon_mb_per_second']:.1f} MB/s through the daemon, "
            f"{lb['backfill_mb_per_second']:.1f} MB/s by backfill of the same files "
            f"(ratio {lb['ratio']:.2f})"
        )
    if result["not_durable"]:
        click.echo(f"NOT DURABLE at both peers: {result['not_durable']} objects", err=True)
