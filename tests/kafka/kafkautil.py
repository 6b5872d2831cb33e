"""Kafka helpers for tests: topics, producing, and reading back what the broker holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replicator.config import KafkaSettings
from replicator.events import ChangeEvent
from replicator.sources.kafka import KafkaSource
from tests.services.kafka.server import KafkaBroker


@dataclass
class Topics:
    broker: KafkaBroker
    events: str
    dead_letters: str
    group: str

    def settings(self, **changes: Any) -> KafkaSettings:
        base: dict[str, Any] = {
            "bootstrap_servers": [self.broker.bootstrap],
            "topics": [self.events],
            "group_id": self.group,
            "dead_letter_topic": self.dead_letters,
            "commit_interval_ms": 100,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500,
        }
        return KafkaSettings.model_validate(base | changes)


async def create_topic(
    broker: KafkaBroker, name: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        # The broker learns of a new topic from the controller a moment later.
        for _ in range(100):
            if name in await admin.list_topics():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topic {name} did not appear")
    finally:
        await admin.close()


async def produce(
    broker: KafkaBroker,
    topic: str,
    values: list[bytes],
    *,
    partition: int | None = None,
    keys: list[bytes | None] | None = None,
) -> list[tuple[int, int]]:
    """Send each value; returns (partition, offset) of each, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        out = []
        for i, value in enumerate(values):
            key = keys[i] if keys is not None else f"k{i}".encode()
            meta = await producer.send_and_wait(topic, value, key=key, partition=partition)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        await producer.stop()


async def committed_offsets(broker: KafkaBroker, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read back through the admin API (A)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def read_all(
    broker: KafkaBroker, topic: str, expect: int, timeout_s: float = 30
) -> list[Any]:
    """Every record of a topic (partition 0..n), read without a group."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


@asynccontextmanager
async def running(source: KafkaSource) -> AsyncIterator[KafkaSource]:
    await source.start()
    try:
        yield source
    finally:
        await source.close()


async def take(source: KafkaSource, n: int, timeout_s: float = 60) -> list[ChangeEvent]:
    """The next ``n`` events (fails the test if they do not come)."""
    out: list[ChangeEvent] = []

    async def collect() -> None:
        async for event in source.events():
            out.append(event)
            if len(out) == n:
                return

    await asyncio.wait_for(collect(), timeout_s)
    return out


async def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def log_start(broker: KafkaBroker, topic: str, partition: int = 0) -> int:
    """The first offset the broker still holds (moved on by retention)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.beginning_offsets([tp]))[tp])
    finally:
        await consumer.stop()
