"""Figures: how fast the source alone hands out and acknowledges events.

No threshold (the machine is shared): the test prints events/s through parse,
hand-out, done() and the committed watermark, so the pipeline's own figures
can be read against it. It fails only if an event is lost or doubled.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from replicator.sources import Outcome
from replicator.sources.kafka import KafkaSource
from tests.kafka.corpus import aws_message, aws_record
from tests.kafka.kafkautil import Topics, committed_offsets, running

pytestmark = pytest.mark.integration

N = 3000


@pytest.mark.parametrize("partitions", [3])
async def test_source_throughput_figures(topics: Topics) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=topics.broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    began = time.perf_counter()
    sends = [
        await producer.send(topics.events, aws_message(aws_record("b", f"obj/{i:05d}.bin", size=i)))
        for i in range(N)
    ]
    await asyncio.gather(*sends)
    await producer.stop()
    produced = time.perf_counter() - began
    keys: set[str] = set()
    async with running(KafkaSource(topics.settings(commit_interval_ms=200))) as source:
        began = time.perf_counter()
        async for event in source.events():
            keys.add(event.key)
            await source.done(event, Outcome.DURABLE)
            if len(keys) == N:
                break
        consumed = time.perf_counter() - began
        await source.commit()
    committed = await committed_offsets(topics.broker, topics.group)
    assert len(keys) == N and sum(committed.values()) == N
    print(f"\n{N} AWS notifications over 3 partitions: produced {N / produced:.0f}/s, "
          f"parsed + handed out + done + committed {N / consumed:.0f} events/s "
          f"({consumed * 1e6 / N:.0f} us each)")  # fmt: skip
