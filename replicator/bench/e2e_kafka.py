"""``replicator bench e2e --source kafka``: the same figures through Kafka and S3.

The real daemon (``replicator run``, a child process) follows an S3 bucket
through a Kafka topic and keeps two directory peers. The bench plays the
object store (``bench/kafka_load.py``): it PUTs objects into the bucket at
a steady rate and produces the matching AWS event notifications. The
figures are those of the directory variant (``bench/e2e.py``), from the
same write log and the daemon's ``durable`` log lines.

The bench works in its own corner and cleans it up: a fresh events topic
and dead-letter topic (``replicator-bench-<tag>``, deleted afterwards), a
fresh consumer group, and keys under ``replicator-bench/<tag>/`` (the
daemon's ``source.prefix``; removed afterwards unless ``--keep``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from prometheus_client.parser import text_string_to_metric_families

from replicator.bench.e2e import print_result, report, sample_rpo
from replicator.bench.e2e_stats import Sample, Write, quantiles
from replicator.bench.kafka_load import (
    Announcer,
    Endpoint,
    Shape,
    SteadyLoad,
    create_topics,
    delete_topics,
    producer,
    remove_objects,
    s3_client,
)
from replicator.config import S3_SMALL_IN_FLIGHT
from replicator.demo.daemon import PEERS, DaemonProcess, DemoError, Durable, free_port

SETTLE_SECONDS = 120.0
ASSIGN_SECONDS = 60.0


@dataclass(frozen=True)
class KafkaTarget:
    """The services the Kafka variant runs against."""

    bootstrap: tuple[str, ...]
    source: Endpoint
    partitions: int = 6
    max_in_flight: int = S3_SMALL_IN_FLIGHT  # service.max_in_flight of each daemon
    tag: str = ""
    max_pack_delay: float = 0.5  # store.max_pack_delay (the daemon's default)

    def named(self, what: str) -> str:
        return f"replicator-bench-{self.tag}-{what}"

    @property
    def prefix(self) -> str:
        return f"replicator-bench/{self.tag}/"


def new_target(
    bootstrap: Sequence[str],
    source: Endpoint,
    partitions: int,
    max_in_flight: int,
    max_pack_delay: float = 0.5,
) -> KafkaTarget:
    tag = secrets.token_hex(4)
    return KafkaTarget(tuple(bootstrap), source, partitions, max_in_flight, tag, max_pack_delay)


def write_kafka_config(
    home: Path, target: KafkaTarget, run: str, *, peers: Path, endpoint_url: str | None
) -> tuple[Path, int]:
    """One daemon's config in ``home`` (its cache beside it); returns (path, port)."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    port = free_port()
    url = f"endpoint_url = {q(endpoint_url)}\n" if endpoint_url else ""
    dests = "".join(
        f'\n[[destinations]]\nname = "{name}"\ntype = "fs"\npath = {q(str(peers / name))}\n'
        for name in PEERS
    )
    text = f"""# Written by replicator bench e2e --source kafka.
[source]
type = "s3"
bucket = {q(target.source.bucket)}
prefix = {q(target.prefix)}

[origin]
{url}region = {q(target.source.region)}
addressing_style = {q(target.source.addressing_style)}

[kafka]
bootstrap_servers = {q(list(target.bootstrap))}
topics = [{q(target.named(run))}]
group_id = {q(target.named(run))}
dead_letter_topic = {q(target.named(run + "-dead"))}
commit_interval_ms = 200
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
{dests}
[store]
pack_size = 4194304
cache_dir = {q(str(home / "cache"))}
max_pack_delay = {target.max_pack_delay}

[service]
metrics_address = "127.0.0.1:{port}"
drain_timeout_seconds = 20
max_in_flight = {target.max_in_flight}
"""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "replicator.toml"
    path.write_text(text, encoding="utf-8")
    return path, port


async def start_daemons(
    root: Path, target: KafkaTarget, run: str, count: int, endpoint_url: str | None
) -> list[DaemonProcess]:
    """``count`` daemons of one consumer group, sharing the peers under ``root``."""
    daemons = []
    for n in range(count):
        cfg, port = write_kafka_config(
            root / f"daemon-{n}", target, run, peers=root, endpoint_url=endpoint_url
        )
        daemons.append(DaemonProcess(cfg, root / f"daemon-{n}.log", port))
    started = await asyncio.gather(*(d.start() for d in daemons), return_exceptions=True)
    failed = [e for e in started if isinstance(e, BaseException)]
    if failed:
        await stop_all(daemons)  # none is left running behind the error
        raise failed[0]
    return daemons


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 where /proc is absent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def assigned(daemon: DaemonProcess, topic: str) -> set[int]:
    """The partitions of ``topic`` a daemon consumes now (its lag series)."""
    text = await daemon.get("/metrics") or ""
    return {
        int(s.labels["partition"])
        for family in text_string_to_metric_families(text)
        if family.name == "replicator_kafka_consumer_lag"
        for s in family.samples
        if s.labels.get("topic") == topic
    }


async def wait_assigned(daemons: Sequence[DaemonProcess], topic: str, partitions: int) -> None:
    """Until the group's rebalance is over: every partition owned, no daemon idle."""
    deadline = time.monotonic() + ASSIGN_SECONDS
    while time.monotonic() < deadline:
        shares = await asyncio.gather(*(assigned(d, topic) for d in daemons))
        owned = set().union(*shares)
        idle = len(daemons) <= partitions and not all(shares)
        if len(owned) == partitions and sum(map(len, shares)) == partitions and not idle:
            return
        await asyncio.sleep(0.2)
    raise DemoError(f"the consumer group of {topic} was not assigned within {ASSIGN_SECONDS:g} s")


def durable_of(daemons: Sequence[DaemonProcess]) -> list[Durable]:
    return [d for daemon in daemons for d in daemon.durable()]


def undurable(writes: Sequence[Write], durable: Sequence[Durable]) -> int:
    """How many writes are not yet durable at both peers."""
    held = {(d.destination, d.key, d.event_time_ns) for d in durable}
    return sum(1 for w in writes if any((p, w.key, w.event_time_ns) not in held for p in PEERS))


async def wait_durable(
    daemons: Sequence[DaemonProcess], writes: Sequence[Write], within: float
) -> bool:
    """Until every write is durable at both peers (True), or ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not undurable(writes, durable_of(daemons)):
            return True
        await asyncio.sleep(0.25)
    return False


async def stop_all(daemons: Sequence[DaemonProcess]) -> int:
    """SIGTERM each; the first non-zero exit code (0 when all stopped cleanly)."""
    codes = await asyncio.gather(*(d.stop() for d in daemons))
    return next((c for c in codes if c), 0)


async def run_kafka_bench(
    root: Path, target: KafkaTarget, duration: float, shape: Shape, *, keep: bool
) -> dict[str, Any]:
    """One daemon under a steady load: the figures of ``bench e2e``."""
    run = "steady"
    topics = [target.named(run), target.named(run + "-dead")]
    await create_topics(target.bootstrap, topics, target.partitions)
    try:
        async with s3_client(target.source) as s3, producer(target.bootstrap) as prod:
            announcer = Announcer(s3, prod, target.source.bucket, target.named(run))
            load = SteadyLoad(announcer, target.prefix, shape)
            try:
                result = await _measure(root, target, run, duration, load)
            finally:
                if not keep:
                    await remove_objects(
                        s3, target.source.bucket, [w.key for w in announcer.writes]
                    )
    finally:
        await delete_topics(target.bootstrap, topics)
    return result


async def _measure(
    root: Path, target: KafkaTarget, run: str, duration: float, load: SteadyLoad
) -> dict[str, Any]:
    (daemon,) = await start_daemons(root, target, run, 1, target.source.url)
    try:
        # Ready (/readyz) comes before the group's first assignment: a load
        # started then would time the join, not the pipeline.
        await wait_assigned([daemon], target.named(run), target.partitions)
    except DemoError:
        await stop_all([daemon])
        raise
    samples: list[Sample] = []
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_rpo(daemon, stop_sampling, samples))
    writes = load.announcer.writes
    pid = daemon.proc.pid if daemon.proc else None
    began, cpu = time.monotonic(), cpu_seconds(pid)
    try:
        offered = await load.run(duration)
        settled = await wait_durable([daemon], writes, SETTLE_SECONDS)
        cpu = (cpu_seconds(pid) - cpu) / (time.monotonic() - began)
    finally:
        stop_sampling.set()
        await sampler
        code = await stop_all([daemon])
    result = report(writes, daemon.durable(), samples, settled=settled, daemon_exit=code)
    result["source"] = "kafka"
    result["offered_objects_per_second"] = round(offered, 3)
    result["partitions"] = target.partitions
    result["max_pack_delay"] = target.max_pack_delay
    result["daemon_cpu_share"] = round(cpu, 3)  # of one core, from the load's start to settled
    result["announce_delay_seconds"] = quantiles(load.announcer.announce_delays)
    return result


def print_kafka_result(result: dict[str, Any]) -> None:
    click.echo(
        f"through Kafka ({result['partitions']} partitions) and S3: "
        f"offered {result['offered_objects_per_second']:.1f} objects/s; "
        f"the daemon used {result['daemon_cpu_share']:.0%} of a core"
    )
    a = result["announce_delay_seconds"]
    click.echo(f"PUT returned -> notification acked by the broker: p50 {a['p50']:.3f} s, "
               f"p99 {a['p99']:.3f} s (part of every latency below)")  # fmt: skip
    print_result(result)
