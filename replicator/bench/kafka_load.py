"""The bench's side of ``bench e2e --source kafka``: it plays the object store.

Each object is PUT to the source bucket (credentials from the standard AWS
chain, as the daemon's own), then announced with the S3 event notification
AWS would publish (``bench/s3notify.py``) on the events topic, keyed by the
object key as AWS's Kafka bridges do. The event time is the PUT's return,
in milliseconds (S3 dates ``eventTime`` when the write completes). Each
announced version goes into the write log the figures are computed from.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from botocore.exceptions import BotoCoreError, ClientError

from replicator.bench.e2e_stats import Write
from replicator.bench.s3notify import created_record, message

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

#: PUTs in flight: 8 offered under 30 objects/s of up to 1 MiB on the loaded machine.
PUT_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Put:
    """One object version in the source bucket, not yet announced."""

    key: str
    size_class: str
    size: int
    etag: str
    version_id: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the source bucket is (credentials come from the environment)."""

    url: str | None
    region: str
    bucket: str
    addressing_style: str = "path"


@contextlib.asynccontextmanager
async def s3_client(ep: Endpoint) -> AsyncIterator[S3Client]:
    config = AioConfig(
        region_name=ep.region,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": ep.addressing_style},
    )
    async with get_session().create_client("s3", endpoint_url=ep.url, config=config) as client:
        yield client


@contextlib.asynccontextmanager
async def producer(bootstrap: Sequence[str]) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=list(bootstrap), acks="all", linger_ms=2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def create_topics(bootstrap: Sequence[str], names: Sequence[str], partitions: int) -> None:
    """Create the bench's throwaway topics and wait until the broker lists them.

    Replication factor 1: aiokafka cannot ask for the broker's default, and a
    bench topic deleted at the end needs no copies."""
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for _ in range(100):
            if set(names) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {', '.join(names)} did not appear")
    finally:
        await admin.close()


async def delete_topics(bootstrap: Sequence[str], names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap))
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


def small_size(rng: random.Random, low: int, high: int) -> int:
    """Log-uniform in [low, high]: as many 1-10 KiB objects as 100 KiB-1 MiB."""
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


async def put_object(s3: S3Client, bucket: str, key: str, size_class: str, data: bytes) -> Put:
    resp = await s3.put_object(Bucket=bucket, Key=key, Body=data)
    vid = str(resp.get("VersionId") or "")
    etag = str(resp["ETag"]).strip('"')
    return Put(key, size_class, len(data), etag, "" if vid == "null" else vid)


@dataclass
class Announcer:
    s3: S3Client
    producer: AIOKafkaProducer
    bucket: str
    topic: str
    writes: list[Write] = field(default_factory=list)
    announce_delays: list[float] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def put(self, key: str, size_class: str, data: bytes) -> Put:
        return await put_object(self.s3, self.bucket, key, size_class, data)

    async def announce(self, put: Put, time_ns: int | None = None) -> Write:
        """Produce the notification of ``put``, dated ``time_ns`` (default: now)."""
        when = (time.time_ns() if time_ns is None else time_ns) // 1_000_000 * 1_000_000
        seq = f"{next(self._seq):016X}"
        rec = created_record(
            self.bucket, put.key, size=put.size, etag=put.etag, version_id=put.version_id,
            sequencer=seq, time_ns=when,
        )  # fmt: skip
        await self.producer.send_and_wait(self.topic, message(rec), key=put.key.encode())
        # From the event time to the broker's ack: the bench's own share of
        # each latency (S3 also takes a moment to publish a notification).
        self.announce_delays.append((time.time_ns() - when) / 1e9)
        write = Write(put.key, put.size_class, put.size, when)
        self.writes.append(write)
        return write

    async def write(self, key: str, size_class: str, data: bytes) -> None:
        put = await self.put(key, size_class, data)
        await self.announce(put, time.time_ns())


@dataclass(frozen=True)
class Shape:
    """New objects at ``rate``/s (and a large one every ``large_every`` s)."""

    rate: float
    max_size: int
    large_size: int = 0
    large_every: float = 0.0
    seed: int = 0
    min_size: int = 1024


@dataclass
class SteadyLoad:
    announcer: Announcer
    prefix: str
    shape: Shape

    async def run(self, duration: float) -> float:
        """Offer the load for ``duration`` s; returns the objects/s really offered."""
        shape = self.shape
        rng = random.Random(shape.seed)
        slots = asyncio.Semaphore(PUT_CONCURRENCY)
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        small = large = 0
        while (elapsed := time.monotonic() - start) < duration:
            if shape.large_every and elapsed >= large * shape.large_every:
                data = await asyncio.to_thread(os.urandom, shape.large_size)
                tasks.append(self._spawn(slots, f"large/obj-{large:05d}", "large", data))
                large += 1
            while small < int(elapsed * shape.rate) + 1:
                data = rng.randbytes(small_size(rng, shape.min_size, shape.max_size))
                key = f"small/{small // 1000:03d}/obj-{small:06d}"
                tasks.append(self._spawn(slots, key, "small", data))
                small += 1
            await asyncio.sleep(max(0.0, small / shape.rate - (time.monotonic() - start)))
        await asyncio.gather(*tasks)
        return len(tasks) / max(1e-9, time.monotonic() - start)

    def _spawn(
        self, slots: asyncio.Semaphore, key: str, size_class: str, data: bytes
    ) -> asyncio.Task[None]:
        async def one() -> None:
            async with slots:
                await self.announcer.write(self.prefix + key, size_class, data)

        return asyncio.create_task(one())


async def put_backlog(
    s3: S3Client, bucket: str, prefix: str, count: int, max_size: int
) -> list[Put]:
    """``count`` objects in the bucket, not announced (the scale-out backlog)."""
    rng = random.Random(0)
    slots = asyncio.Semaphore(PUT_CONCURRENCY)

    async def one(i: int, data: bytes) -> Put:
        async with slots:
            return await put_object(s3, bucket, f"{prefix}obj-{i:06d}", "small", data)

    sizes = [small_size(rng, 1024, max_size) for _ in range(count)]
    return list(await asyncio.gather(*(one(i, rng.randbytes(n)) for i, n in enumerate(sizes))))


async def remove_objects(s3: S3Client, bucket: str, keys: Sequence[str]) -> None:
    """Best-effort clean-up of what the bench wrote (1000 keys a request)."""
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        with contextlib.suppress(ClientError, BotoCoreError):
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})  # type: ignore[typeddict-item]
