"""The backlog probe while the brokers are away (a real, refused connection)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaError

from replicator.config import KafkaSettings
from replicator.sources.kafka_backlog import BacklogClock
from tests.services.process import free_port


async def test_a_probe_that_could_not_start_is_not_kept() -> None:
    # Before the fix the half-built probe was kept: the next refresh sought on
    # a consumer with no fetcher (AttributeError), which ended the commit task.
    settings = KafkaSettings(
        bootstrap_servers=[f"127.0.0.1:{free_port()}"],  # nothing listens there
        topics=["events"],
        group_id="g",
        dead_letter_topic="dlq",
    )
    clock = BacklogClock(settings)
    try:
        for attempt in range(2):
            with pytest.raises(KafkaError):
                await clock._read_timestamps({("events", 0): 0})
            print(f"\nprobe attempt {attempt}: KafkaError, the probe not kept")
    finally:
        await clock.stop()
