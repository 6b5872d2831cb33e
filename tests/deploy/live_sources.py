"""The other real processes behind the dashboard's panels, for the live test
(test_live_daemon.py): a ``replicator run`` on an S3 bucket followed
through the real Kafka broker (consumer lag, gaps), and a real
``replicator drill`` pushing its figures to a real Pushgateway."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemon import harness
from tests.kafka.kafkad import Announcer, s3_env, write_config
from tests.kafka.kafkautil import Topics, create_topic
from tests.services.kafka.server import KafkaBroker
from tests.services.moto_server import MotoServer

#: Objects announced through Kafka (enough for rates, few for a short test).
ANNOUNCED = 6


@dataclass
class KafkaRun:
    """A daemon on a (versioned) moto bucket followed through fresh topics."""

    daemon: Any
    topics: Topics
    client: Any
    bucket: str


def kafka_daemon(
    tmp: Path, broker: KafkaBroker, moto: MotoServer, *, extra: str = "", announce: bool = True
) -> KafkaRun:
    """A daemon consuming fresh topics (2 partitions), a few objects announced."""
    tag = secrets.token_hex(4)
    topics = Topics(broker, f"s3-events-{tag}", f"s3-dead-{tag}", f"replicator-{tag}")
    client = moto.endpoint.client()
    bucket = f"src-{tag}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    asyncio.run(_create(topics))
    cfg = write_config(tmp, topics, moto, bucket, extra=extra)
    daemon = harness.Daemon(cfg, tmp / "daemon.log", env=s3_env(moto))
    daemon.wait_ready()
    if announce:
        # Not waited for: the dashboard test polls each panel until it has series.
        asyncio.run(_announce(client, bucket, topics))
    return KafkaRun(daemon, topics, client, bucket)


async def _create(topics: Topics) -> None:
    await create_topic(topics.broker, topics.events, 2)
    await create_topic(topics.broker, topics.dead_letters, 1)


async def _announce(client: Any, bucket: str, topics: Topics) -> None:
    async with Announcer(client, bucket, topics) as ann:
        for i in range(ANNOUNCED):
            await ann.announce(f"k/{i}.bin", os.urandom(10_000 + i))


def drill(cfg: Path, destination: str, scratch: Path, pushgateway: str) -> str:
    """``replicator drill`` as a real process; its stdout (the report)."""
    scratch.mkdir()
    done = harness.replicator(
        "drill",
        "--config",
        str(cfg),
        "--destination",
        destination,
        "--scratch",
        str(scratch),
        "--pushgateway",
        pushgateway,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
