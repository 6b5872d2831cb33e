"""A consumer-group member in its own process, so a test can kill -9 it.

    python -m tests.kafka.member SETTINGS_JSON HOLD_FROM

Consumes through KafkaSource; reports on stdout, one JSON object a line, the
partitions it holds (when they change) and each event it takes. Events at
offsets below HOLD_FROM are done at once; the others are held (never done),
as work still in flight when the process dies.
"""

from __future__ import annotations

import asyncio
import json
import sys

from replicator.config import KafkaSettings
from replicator.sources import Outcome
from replicator.sources.kafka import KafkaSource


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def report_partitions(source: KafkaSource) -> None:
    last: list[list[object]] = []
    while True:
        now = sorted([list(tp) for tp in source.lag()])
        if now != last:
            say(partitions=now)
            last = now
        await asyncio.sleep(0.1)


async def main(settings_json: str, hold_from: int) -> None:
    source = KafkaSource(KafkaSettings.model_validate_json(settings_json))
    await source.start()
    reporter = asyncio.create_task(report_partitions(source))
    async for event in source.events():
        pos = event.position
        done = pos.offset < hold_from
        say(event=[pos.topic, pos.partition, pos.offset, event.key], done=done)
        if done:
            await source.done(event, Outcome.DURABLE)
    reporter.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
