"""KafkaSource against a real Apache Kafka broker and objects really written to moto.

A (acknowledged) is read back with the admin API: the group's committed
offsets. Every test prints what it tried (messages, partitions, offsets).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from replicator.config import Settings
from replicator.errors import ConfigError, SourceError
from replicator.events import ChangeEvent, Kind
from replicator.sources import Outcome
from replicator.sources.kafka import Gap, KafkaSource, kafka_source
from tests.kafka.corpus import MALFORMED, aws_message, aws_record, ceph_message, minio_message
from tests.kafka.kafkautil import (
    Topics,
    committed_offsets,
    create_topic,
    log_start,
    produce,
    read_all,
    running,
    take,
    wait_for,
)

pytestmark = pytest.mark.integration

KEYS = ["plain.bin", "with space/and+plus.txt", "100%/ratio=1.0", "ünï/日本/🚀.pt", "a%2Fb"]


def write_objects(client: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """Put one object per key; return what the bucket says of each (HEAD)."""
    heads = {}
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=key, Body=bytes([i]) * (100 + i))
        heads[key] = client.head_object(Bucket=bucket, Key=key)
    return heads


def notifications(bucket: str, heads: dict[str, dict[str, Any]]) -> list[bytes]:
    """Each object announced once in each format: AWS, MinIO, Ceph."""
    out = []
    for fmt in (aws_message, minio_message, ceph_message):
        for key, head in heads.items():
            size, etag = head["ContentLength"], head["ETag"].strip('"')
            if fmt is aws_message:
                out.append(aws_message(aws_record(bucket, key, size=size, etag=etag)))
            elif fmt is minio_message:
                out.append(minio_message(bucket, key, size=size, etag=etag))
            else:
                out.append(ceph_message(bucket, key, size=str(size), etag=etag))
    return out


async def test_three_formats_real_objects_and_exact_acknowledgement(
    topics: Topics, source_bucket: tuple[Any, str]
) -> None:
    client, bucket = source_bucket
    heads = write_objects(client, bucket)
    messages = notifications(bucket, heads)
    # AWS (through a bridge) and MinIO key their records; Ceph RGW sends no key.
    keys = [f"{bucket}/{k}".encode() for k in KEYS] * 2 + [None] * len(KEYS)
    await produce(topics.broker, topics.events, messages, keys=keys)
    async with running(KafkaSource(topics.settings())) as source:
        events = await take(source, len(messages))
        for ev in events:  # every event names a real object, byte-for-byte key
            got = client.get_object(Bucket=bucket, Key=ev.key)
            assert got["ContentLength"] == ev.size == heads[ev.key]["ContentLength"]
            assert ev.etag == heads[ev.key]["ETag"].strip('"') and ev.kind is Kind.CREATED
        assert sorted(e.key for e in events) == sorted(KEYS * 3)
        done = [e for e in events if e.position.offset < 7]
        for ev in done:
            await source.done(ev, Outcome.DURABLE)
        await source.commit()
        assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): 7}
        for ev in events[7:]:
            await source.done(ev, Outcome.SUPERSEDED)
    assert await committed_offsets(topics.broker, topics.group) == {
        (topics.events, 0): len(messages)
    }
    print(f"{len(messages)} notifications (AWS, MinIO, Ceph) for {len(KEYS)} real objects")


async def test_dead_letters_carry_reason_bytes_and_origin(topics: Topics) -> None:
    good = [aws_message(aws_record("b", f"ok-{i}", size=i)) for i in range(len(MALFORMED))]
    interleaved = [m for pair in zip(good, [m for m, _ in MALFORMED], strict=True) for m in pair]
    sent = await produce(topics.broker, topics.events, interleaved)
    async with running(KafkaSource(topics.settings())) as source:
        events = await take(source, len(good))
        assert [e.key for e in events] == [f"ok-{i}" for i in range(len(good))]
        for ev in events:
            await source.done(ev, Outcome.DURABLE)
        # The last dead letter follows the last good event: keep the loop going.
        tail = asyncio.ensure_future(take(source, 1, timeout_s=120))
        await wait_for(lambda: source.dead_letters == len(MALFORMED), "every dead letter")
        tail.cancel()
        await source.commit()
    dead = await read_all(topics.broker, topics.dead_letters, len(MALFORMED))
    assert len(dead) == len(MALFORMED)
    for record, (original, gist), (part, offset) in zip(dead, MALFORMED, sent[1::2], strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert record.value == (original or None) or record.value == original
        assert gist in headers["replicator.reason"], headers["replicator.reason"]
        assert headers["replicator.topic"] == topics.events
        assert (int(headers["replicator.partition"]), int(headers["replicator.offset"])) == (
            part,
            offset,
        )
    assert await committed_offsets(topics.broker, topics.group) == {
        (topics.events, 0): len(interleaved)
    }
    print(f"{len(MALFORMED)} malformed messages dead-lettered between {len(good)} good ones")


async def test_commit_never_passes_an_undone_event(topics: Topics) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    await produce(
        topics.broker, topics.events, [aws_message(aws_record("b", f"k{i}")) for i in range(25)]
    )
    async with running(KafkaSource(topics.settings())) as source:
        events = await take(source, 25)
        order = events[:]
        rng.shuffle(order)
        undone = {e.position.offset for e in events}
        for ev in order:
            await source.done(ev, Outcome.DURABLE)
            undone.discard(ev.position.offset)
            await source.commit()
            want = min(undone, default=25)
            got = await committed_offsets(topics.broker, topics.group)
            assert got.get((topics.events, 0), 0) == want, f"seed {seed}"
    print(f"25 events done in a random order (seed {seed}); committed offset checked after each")


async def test_failed_events_hold_the_watermark(topics: Topics) -> None:
    await produce(
        topics.broker, topics.events, [aws_message(aws_record("b", f"k{i}")) for i in range(4)]
    )
    async with running(KafkaSource(topics.settings())) as source:
        events = await take(source, 4)
        await source.done(events[0], Outcome.DURABLE)
        await source.done(events[1], Outcome.FAILED)  # e.g. a 403: never acknowledged
        await source.done(events[2], Outcome.SKIPPED)
        await source.done(events[3], Outcome.DEAD_LETTER)
    assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): 1}
    (dead,) = await read_all(topics.broker, topics.dead_letters, 1)
    assert b'"key": "k3"' in dead.value
    assert dict(dead.headers)["replicator.offset"] == b"3"


async def test_multi_record_message_is_acknowledged_when_all_are_done(topics: Topics) -> None:
    message = aws_message(*(aws_record("b", f"part-{i}", size=i) for i in range(3)))
    await produce(topics.broker, topics.events, [message, aws_message(aws_record("b", "next"))])
    async with running(KafkaSource(topics.settings())) as source:
        events = await take(source, 4)
        assert {e.position.offset for e in events[:3]} == {0}
        for ev in events[1:]:
            await source.done(ev, Outcome.DURABLE)
        await source.commit()
        assert await committed_offsets(topics.broker, topics.group) == {}
        await source.done(events[0], Outcome.DURABLE)
    assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): 2}


async def test_backpressure_pauses_instead_of_buffering(topics: Topics) -> None:
    total, bound = 40, 5
    values = [aws_message(aws_record("b", f"k{i}")) for i in range(total)]
    await produce(topics.broker, topics.events, values)
    stamps = {r.offset: r.timestamp for r in await read_all(topics.broker, topics.events, total)}
    # One fetch takes exactly `bound` records: when fetching pauses nothing is
    # buffered, so the backlog's age must come from the brokers (the probe).
    settings = topics.settings(max_in_flight=bound, fetch_records=bound)
    async with running(KafkaSource(settings)) as source:
        taken = await take(source, bound)
        # The next event does not come while `bound` are out: fetching pauses.
        blocked = asyncio.ensure_future(take(source, 1, timeout_s=120))
        await wait_for(lambda: source._client().paused(), "the partition to pause")
        await asyncio.sleep(1.0)
        assert not blocked.done() and source.in_flight == bound
        await wait_for(lambda: source.backlog().oldest_time_ns is not None, "the backlog's age")
        backlog, lag = source.backlog(), source.lag()
        assert backlog.events == total - bound and not source._buffer
        assert lag == {(topics.events, 0): total}
        assert backlog.oldest_time_ns == stamps[bound] * 1_000_000
        print(f"paused at {bound} in flight: backlog {backlog.events} records, lag {lag}, "
              f"oldest waiting record's time read from the broker")  # fmt: skip
        await source.done(taken[0], Outcome.DURABLE)
        taken += await blocked
        peak = source.in_flight
        for ev in taken:
            await source.done(ev, Outcome.DURABLE)
        taken += await drain(source, total - len(taken), bound)
        assert peak <= bound and source.pauses >= 1
        assert sorted(e.position.offset for e in taken) == list(range(total))
    assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): total}


async def drain(source: KafkaSource, n: int, bound: int) -> list[ChangeEvent]:
    """Take and finish ``n`` events, checking the in-flight bound on the way."""
    out: list[ChangeEvent] = []

    async def run() -> None:
        async for event in source.events():
            assert source.in_flight <= bound
            out.append(event)
            await source.done(event, Outcome.DURABLE)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), 120)
    return out


async def test_missing_topic_and_unreachable_broker(topics: Topics) -> None:
    with pytest.raises(ConfigError, match="no-such-topic"):
        await KafkaSource(topics.settings(topics=["no-such-topic"])).start()
    with pytest.raises(SourceError, match=r"kafka\.bootstrap_servers"):
        await KafkaSource(topics.settings(bootstrap_servers=["127.0.0.1:9"])).start()


async def test_retention_gap_is_reported_and_consumption_goes_on(topics: Topics) -> None:
    values = [aws_message(aws_record("b", f"k{i}")) for i in range(10)]
    await produce(topics.broker, topics.events, values)
    async with running(KafkaSource(topics.settings())) as source:
        for ev in await take(source, 3):
            await source.done(ev, Outcome.DURABLE)
    assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): 3}
    # What retention does while the daemon is down: the log start moves on.
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.broker.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topics.events, 0): RecordsToDelete(8)})
    finally:
        await admin.close()
    gaps: list[Gap] = []
    handed_out_during_hook: list[int] = []

    async def reconcile(gap: Gap) -> None:  # the daemon's listing reconcile, awaited
        gaps.append(gap)
        await asyncio.sleep(0.5)
        handed_out_during_hook.append(source.handed_out)

    async with running(KafkaSource(topics.settings(), on_gap=reconcile)) as source:
        events = await take(source, 2)
        assert [e.key for e in events] == ["k8", "k9"]  # from the log start, not the end
        assert source.gaps == 1
        assert gaps == [Gap(topics.events, 0, 3, 8)]
        assert handed_out_during_hook == [0]  # nothing went on before the reconcile
    # A new group on a log that no longer starts at 0 has missed events too.
    other: list[Gap] = []
    fresh = KafkaSource(topics.settings(group_id=topics.group + "-new"), on_gap=other.append)
    async with running(fresh) as source:
        await take(source, 2)
    assert other == [Gap(topics.events, 0, None, 8)]
    print("gap: committed 3, log start 8 -> reported, consumption resumed at 8")


async def test_factory_hands_out_only_the_configured_bucket_and_prefix(
    topics: Topics, tmp_path: Any
) -> None:
    settings = Settings.model_validate(
        {
            "source": {"type": "s3", "bucket": "mine", "prefix": "ckpt/"},
            "origin": {"endpoint_url": "http://127.0.0.1:1"},
            "destinations": [{"name": "peer", "type": "fs", "path": str(tmp_path)}],
            "kafka": topics.settings().model_dump(),
        }
    )
    values = [
        aws_message(aws_record("mine", "ckpt/a.pt", size=1)),
        aws_message(aws_record("other", "ckpt/b.pt", size=1)),
        aws_message(aws_record("mine", "logs/c.txt", size=1)),
        aws_message(
            aws_record("mine", "ckpt/d.pt", size=1), aws_record("theirs", "ckpt/e", size=1)
        ),
    ]
    await produce(topics.broker, topics.events, values)
    async with running(kafka_source(settings)) as source:
        events = await take(source, 2)
        assert [(e.bucket, e.key, e.source) for e in events] == [
            ("mine", "ckpt/a.pt", "s3"),
            ("mine", "ckpt/d.pt", "s3"),
        ]
        assert source.skipped == 3
        for ev in events:
            await source.done(ev, Outcome.DURABLE)
    assert await committed_offsets(topics.broker, topics.group) == {(topics.events, 0): 4}


async def test_real_retention_gap(topics: Topics) -> None:
    """The broker's own retention (not an admin call) deletes unacknowledged events."""
    topic = topics.events + "-retained"
    # Segments roll after 200 ms and are deleted 1 s after their last record
    # (the test broker checks retention every second).
    configs = {"segment.ms": "200", "retention.ms": "1000", "file.delete.delay.ms": "0"}
    await create_topic(topics.broker, topic, 1, configs)
    settings = topics.settings(topics=[topic])
    await produce(
        topics.broker, topic, [aws_message(aws_record("b", f"old-{i}")) for i in range(5)]
    )
    async with running(KafkaSource(settings)) as source:
        for ev in await take(source, 2):
            await source.done(ev, Outcome.DURABLE)
    assert await committed_offsets(topics.broker, topics.group) == {(topic, 0): 2}
    started = time.monotonic()
    while await log_start(topics.broker, topic) < 5:  # the daemon is down meanwhile
        await asyncio.sleep(0.5)
        # A record after segment.ms rolls the segment holding the old ones.
        await produce(topics.broker, topic, [aws_message(aws_record("b", "roll"))])
        assert time.monotonic() - started < 120, "retention never ran"
    gaps: list[Gap] = []
    async with running(KafkaSource(settings, on_gap=gaps.append)) as source:
        (event,) = await take(source, 1)
        assert event.key == "roll" and event.position.offset >= 5
    assert [(g.committed, g.log_start >= 5) for g in gaps] == [(2, True)]
    print(f"retention deleted offsets 2..{gaps[0].log_start - 1} unacknowledged: gap reported")
