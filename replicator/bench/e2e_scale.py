"""``bench e2e --source kafka --scale-out``: one daemon against two in one group.

A backlog of objects is PUT to the source bucket first (so the bench's own
PUTs do not compete with the daemons), then, for one and then two daemons
of one consumer group on a fresh topic of ``--partitions`` partitions and
fresh peers, the bench waits until every partition is assigned, announces
the whole backlog at once and times until the last object is durable at
both peers: objects/s = backlog / that time.

What bounds a daemon is reported beside the figure: each daemon's CPU time
over the drain (from /proc), and the bound of its read window,
``service.max_in_flight`` objects read at once, each taking at least the
source's round trip. ``--source-latency`` adds a fixed delay to every
request the daemons send to the source (``bench/latency_proxy.py``), as a
distant bucket would: then one daemon is bound by its window, not by CPU,
and a second daemon's window adds to it, which is what scale-out is for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from replicator.bench.e2e_kafka import (
    SETTLE_SECONDS,
    KafkaTarget,
    cpu_seconds,
    start_daemons,
    stop_all,
    undurable,
    wait_assigned,
    wait_durable,
)
from replicator.bench.kafka_load import (
    Announcer,
    Put,
    create_topics,
    delete_topics,
    producer,
    put_backlog,
    remove_objects,
    s3_client,
)
from replicator.bench.latency_proxy import LatencyProxy
from replicator.demo.daemon import PEERS, DaemonProcess

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


async def drain(
    root: Path,
    target: KafkaTarget,
    count: int,
    *,
    puts: Sequence[Put],
    s3: S3Client,
    url: str | None,
) -> dict[str, Any]:
    """``count`` daemons drain the announced backlog; their objects/s."""
    run = f"scale{count}"
    topics = [target.named(run), target.named(run + "-dead")]
    await create_topics(target.bootstrap, topics, target.partitions)
    try:
        daemons = await start_daemons(root, target, run, count, url)
        try:
            await wait_assigned(daemons, topics[0], target.partitions)
            async with producer(target.bootstrap) as prod:
                ann = Announcer(s3, prod, target.source.bucket, topics[0])
                cpu = [cpu_seconds(d.proc.pid if d.proc else None) for d in daemons]
                began = time.time_ns()
                await asyncio.gather(*(ann.announce(p, began) for p in puts))
            settled = await wait_durable(daemons, ann.writes, SETTLE_SECONDS)
            cpu = [
                cpu_seconds(d.proc.pid if d.proc else None) - c
                for d, c in zip(daemons, cpu, strict=True)
            ]
        finally:
            code = await stop_all(daemons)
    finally:
        await delete_topics(target.bootstrap, topics)
    return _figures(daemons, ann, began, cpu, settled=settled, daemon_exit=code)


def _figures(
    daemons: Sequence[DaemonProcess],
    ann: Announcer,
    began: int,
    cpu: list[float],
    *,
    settled: bool,
    daemon_exit: int,
) -> dict[str, Any]:
    wanted = {(w.key, w.event_time_ns) for w in ann.writes}
    per_daemon = [
        [d for d in daemon.durable() if (d.key, d.event_time_ns) in wanted] for daemon in daemons
    ]
    last = max((d.durable_ns for ds in per_daemon for d in ds), default=began)
    seconds = max(1e-9, (last - began) / 1e9)
    return {
        "daemons": len(daemons),
        "objects": len(ann.writes),
        "not_durable": undurable(ann.writes, [d for ds in per_daemon for d in ds]),
        "settled": settled,
        "daemon_exit": daemon_exit,
        "seconds": round(seconds, 3),
        "objects_per_second": round(len(ann.writes) / seconds, 3),
        "objects_per_daemon": [
            sum(1 for d in ds if d.destination == PEERS[0]) for ds in per_daemon
        ],
        "cpu_seconds_per_daemon": [round(c, 3) for c in cpu],
        "cpu_share_per_daemon": [round(c / seconds, 3) for c in cpu],
    }


async def run_scale_out(
    root: Path, target: KafkaTarget, backlog: int, max_size: int, latency: float, *, keep: bool
) -> dict[str, Any]:
    """The backlog drained by one daemon, then by two; the speed-up."""
    async with s3_client(target.source) as s3:
        puts = await put_backlog(s3, target.source.bucket, target.prefix, backlog, max_size)
        proxy = LatencyProxy(target.source.url or "", latency) if latency else None
        try:
            url = await proxy.start() if proxy else target.source.url
            runs = [
                await drain(root / f"{n}-daemons", target, n, puts=puts, s3=s3, url=url)
                for n in (1, 2)
            ]
        finally:
            if proxy is not None:
                await proxy.close()
            if not keep:
                await remove_objects(s3, target.source.bucket, [p.key for p in puts])
    one, two = (r["objects_per_second"] for r in runs)
    return {
        "source": "kafka",
        "scale_out": True,
        "objects": backlog,
        "partitions": target.partitions,
        "max_in_flight": target.max_in_flight,
        "source_latency_seconds": latency,
        # Each daemon reads at most max_in_flight objects at once, each for at
        # least one source round trip: its ceiling whatever the CPU.
        "window_bound_objects_per_second": (
            round(target.max_in_flight / latency, 3) if latency else None
        ),
        "runs": runs,
        "speedup": round(two / one, 3) if one else 0.0,
    }


def print_scale_out(result: dict[str, Any]) -> None:
    delay = result["source_latency_seconds"]
    click.echo(
        f"{result['objects']} objects announced at once over {result['partitions']} partitions; "
        f"each daemon reads {result['max_in_flight']} at once; "
        f"source round trip +{delay * 1000:.0f} ms"
        + (f" (window bound {result['window_bound_objects_per_second']:.1f} objects/s a daemon)"
           if delay else "")
    )  # fmt: skip
    for r in result["runs"]:
        cpu = ", ".join(f"{c:.0%}" for c in r["cpu_share_per_daemon"])
        click.echo(
            f"{r['daemons']} daemon(s): {r['objects_per_second']:.1f} objects/s "
            f"({r['seconds']:.1f} s; objects per daemon {r['objects_per_daemon']}; "
            f"CPU per daemon {cpu} of a core)"
        )
        if r["not_durable"]:
            click.echo(f"NOT DURABLE at both peers: {r['not_durable']} objects", err=True)
    click.echo(f"two daemons / one: {result['speedup']:.2f}x")
