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
import resource
import threading
import time
from collections.abc import Iterable
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
from replicator.config import FsDestinationSettings, Settings
from replicator.config import load as load_settings
from replicator.demo.daemon import PEERS, DaemonProcess, Durable, free_port, write_config
from replicator.pipeline.backfill import run_backfill

SMALL_MIN, SMALL_MAX = 1024, 1024 * 1024
#: A large object is generated and written in pieces of this size.
LARGE_PIECE = 1024 * 1024
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
        """Small objects at ``rate`` on this thread, large ones on their own.

        With one thread, generating and writing a 64 MiB object paused the
        small writes for about a second, then wrote the ~50 that were due
        in one burst, just as the daemon started on the large object: not
        the steady load the figures are about."""
        start = time.monotonic()
        large = threading.Thread(target=self._large, args=(start, duration, stop), daemon=True)
        if self.large_every:
            large.start()
        try:
            self._small(start, duration, stop)
        finally:
            if large.is_alive():
                large.join()

    def _small(self, start: float, duration: float, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        small = 0
        while not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            due = int(elapsed * self.rate) + 1
            while small < due:
                size = int(math.exp(rng.uniform(math.log(SMALL_MIN), math.log(SMALL_MAX))))
                self._write(
                    f"small/{small // 1000:03d}/obj-{small:06d}", "small", [rng.randbytes(size)]
                )
                small += 1
            stop.wait(max(0.0, (small / self.rate) - (time.monotonic() - start)))

    def _large(self, start: float, duration: float, stop: threading.Event) -> None:
        rng = random.Random(self.seed + 1)
        n = 0
        while (due := n * self.large_every) < duration:
            if stop.wait(max(0.0, due - (time.monotonic() - start))):
                break
            # Generated piece by piece as it is written: each piece holds the
            # GIL briefly, so the small writer keeps its pace meanwhile.
            count, rest = divmod(self.large_size, LARGE_PIECE)
            sizes = [LARGE_PIECE] * count + ([rest] if rest else [])
            self._write(f"large/obj-{n:05d}", "large", (rng.randbytes(k) for k in sizes))
            n += 1

    def burst(self, count: int) -> None:
        """``count`` large objects at once: written outside the tree, then
        renamed in one after another (the daemon sees them within ms), so
        the daemon's pace, not the writer's, sets the time they take."""
        rng = random.Random(self.seed)
        staging = self.root.parent / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (staging / f"burst-{i:04d}").write_bytes(rng.randbytes(self.large_size))
        (self.root / "large").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            key = f"large/burst-{i:04d}"
            os.replace(staging / f"burst-{i:04d}", self.root / key)
            ctime = os.stat(self.root / key).st_ctime_ns
            self.writes.append(Write(key, "large", self.large_size, ctime))

    def _write(self, key: str, size_class: str, pieces: Iterable[bytes]) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        size = 0
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
                size += len(piece)
        os.replace(tmp, path)
        ctime = os.stat(path).st_ctime_ns
        self.writes.append(Write(key, size_class, size, ctime))  # atomic under the GIL


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


async def run_bench(root: Path, duration: float, load: Load, burst: int = 0) -> dict[str, Any]:
    """The steady load for ``duration`` s, or (``burst``) that many large
    objects at once; then the same large files backfilled to fresh peers."""
    port = free_port()
    cfg = write_config(root, port=port)
    daemon = DaemonProcess(cfg, root / "daemon.log", port)
    await daemon.start()
    samples: list[Sample] = []
    stop_sampling, stop_load = asyncio.Event(), threading.Event()
    sampler = asyncio.create_task(sample_rpo(daemon, stop_sampling, samples))
    try:
        if burst:
            await asyncio.to_thread(load.burst, burst)
            # The daemon may not have read the renames' events yet: wait for
            # the writes themselves, not for an empty queue.
            await wait_durable(daemon, load.writes, SETTLE_SECONDS)
        else:
            await asyncio.to_thread(load.run, duration, stop_load)
        settled = await daemon.wait_settled(SETTLE_SECONDS)
    finally:
        stop_load.set()
        stop_sampling.set()
        await sampler
        code = await daemon.stop()
    result = report(load.writes, daemon.durable(), samples, settled=settled, daemon_exit=code)
    # The daemon is the bench's only child: what it used of the CPUs, a
    # figure the shared machine's load does not inflate as it does times.
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["daemon_cpu_seconds"] = round(used.ru_utime + used.ru_stime, 3)
    result["large_vs_backfill"] = await large_vs_backfill(
        root, load_settings(cfg), load.writes, daemon, burst=bool(burst)
    )
    return result


async def wait_durable(daemon: DaemonProcess, writes: list[Write], within: float) -> None:
    """Until every write is durable at both peers (per the daemon's log), or ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        _, missing = latencies(writes, covered_at(daemon.durable()), PEERS)
        if not missing:
            return
        await asyncio.sleep(0.2)


async def large_vs_backfill(
    root: Path,
    daemon_settings: Settings,
    writes: list[Write],
    daemon: DaemonProcess,
    *,
    burst: bool,
) -> dict[str, Any] | None:
    """Large objects' MB/s through the daemon against ``backfill`` of the
    same files to two fresh peers with the daemon's store settings.

    After a burst the daemon's time is from the first event to the last
    version durable at both peers (it had them all at once, as backfill
    does); in the steady load, the sum of each object's event -> durable at
    both peers (one at a time, with the small load beside it)."""
    large = [w for w in writes if w.size_class == "large"]
    if not large:
        return None
    covered = covered_at(daemon.durable())
    done = [max(covered.get((p, w.key, w.event_time_ns), 0) for p in PEERS) for w in large]
    if burst:
        seconds = max(0.0, (max(done) - min(w.event_time_ns for w in large)) / 1e9)
    else:
        pairs = zip(done, large, strict=True)
        seconds = sum(max(0.0, (d - w.event_time_ns) / 1e9) for d, w in pairs)
    fresh = [FsDestinationSettings(name=f"fresh-{p}", path=root / f"fresh-{p}") for p in PEERS]
    settings = daemon_settings.model_copy(
        update={
            "destinations": fresh,
            "store": daemon_settings.store.model_copy(update={"cache_dir": root / "fresh-cache"}),
        }
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = await run_backfill(settings, prefix="large/")
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    nbytes = sum(w.size for w in large)
    daemon_mb_s = nbytes / max(seconds, 1e-9) / 1e6
    backfill_mb_s = summary.source_bytes / max(summary.elapsed_seconds, 1e-9) / 1e6
    return {
        "objects": len(large),
        "daemon_time": "first event to last durable" if burst else "sum of per-object latency",
        "daemon_mb_per_second": round(daemon_mb_s, 3),
        "backfill_mb_per_second": round(backfill_mb_s, 3),
        "ratio": round(daemon_mb_s / backfill_mb_s, 3) if backfill_mb_s else 0.0,
        # CPU seconds per GB: what each costs, whatever the machine's load.
        "backfill_cpu_seconds_per_gb": round(cpu / max(summary.source_bytes, 1) * 1e9, 3),
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
    if "daemon_cpu_seconds" in result:  # the directory variant's (Kafka's reports a share)
        click.echo(f"daemon CPU time: {result['daemon_cpu_seconds']:.1f} s")
    sc = result["scrape_seconds"]
    click.echo(
        f"/metrics scrape took p50 {sc['p50']:.3f} s, p99 {sc['p99']:.3f} s, max {sc['max']:.3f} s"
    )
    lb = result.get("large_vs_backfill")
    if lb:
        click.echo(
            f"large objects ({lb['objects']}): {lb['daemon_mb_per_second']:.1f} MB/s through "
            f"the daemon ({lb['daemon_time']}), {lb['backfill_mb_per_second']:.1f} MB/s by "
            f"backfill of the same files (ratio {lb['ratio']:.2f})"
        )
    if result["not_durable"]:
        click.echo(f"NOT DURABLE at both peers: {result['not_durable']} objects", err=True)
