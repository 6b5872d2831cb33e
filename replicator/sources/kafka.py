"""KafkaSource: S3 change events from a Kafka consumer group.

Each record is parsed (``s3events``) into ChangeEvents that are handed out
with a unique ``observed`` token; the record's offset is committed only once
every one of its events came back through :meth:`KafkaSource.done` with an
outcome other than FAILED (``watermark``). What cannot be parsed goes to the
dead-letter topic with its reason, original bytes and origin headers, and the
consumer goes on. Several daemons in one group share the partitions: a
rebalance commits the watermark of the partitions leaving and drops their
events in flight (they are read again by the new owner; content addressing
makes the repeat harmless).

Also here: the backlog (records between what was handed out and the log end,
with the oldest fetched record's time), per-partition lag, gap detection
(a committed offset below the log start, or no committed offset while the
log no longer starts at 0: events were lost to retention or expiry, and the
``on_gap`` hook lets the daemon reconcile against a listing -- the consumer
never jumps to the latest offset on its own) and backpressure (partitions
are paused while ``max_in_flight`` events are handed out and not done).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from replicator.config import KafkaSettings
from replicator.errors import ConfigError, SourceError
from replicator.events import ChangeEvent, Position
from replicator.sources import Backlog, Outcome
from replicator.sources.kafka_clients import (
    dead_letter_headers,
    make_consumer,
    make_producer,
    produce_until_acked,
)
from replicator.sources.s3events import ParseError, parse_message
from replicator.sources.watermark import PartitionMark, Watermarks
from replicator.sources.watermark import TopicPartition as TP

log = logging.getLogger(__name__)


class Record(Protocol):
    """What is used of an aiokafka ConsumerRecord (aiokafka ships no type marker)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms: the producer's or the broker's time
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of a partition that no consumer of the group will ever read."""

    topic: str
    partition: int
    committed: int | None  # the group's offset (None: the group had none)
    log_start: int  # the first offset the broker still holds


GapHook = Callable[[Gap], Awaitable[None] | None]
#: Told of each outcome settled inside the source (dead letters of records
#: that did not parse, skipped test events), which the pipeline never sees.
OutcomeHook = Callable[[Outcome], None]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource):
        self.source = source

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.source._revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.source._assigned(assigned)


class KafkaSource:
    """The Source of S3 notifications read from Kafka (see the module docstring)."""

    name = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        source_id: str = "s3",
        on_gap: GapHook | None = None,
        on_outcome: OutcomeHook | None = None,
    ):
        self.settings = settings
        self.source_id = source_id  # SourceIdentity.source of the S3 origin
        self.on_gap = on_gap
        self.on_outcome = on_outcome or (lambda outcome: None)
        # Counters the daemon exports (replicator_events_total{outcome}, gaps).
        self.handed_out = 0
        self.dead_letters = 0
        self.skipped = 0
        self.failed = 0
        self.gaps = 0
        self.pauses = 0
        self.dropped_on_revoke = 0
        self._marks = Watermarks()
        self._tokens = itertools.count(1)
        self._buffer: deque[tuple[PartitionMark, Record]] = deque()
        self._log_end: dict[TP, int] = {}
        self._pending_gaps: list[Gap] = []
        self._room = asyncio.Event()
        self._closing = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        consumer = make_consumer(s)
        producer = make_producer(s)
        try:
            await consumer.start()
            await producer.start()
            topics = await consumer.topics()
        except KafkaError as exc:
            await self._stop_clients(consumer, producer)
            servers = ",".join(s.bootstrap_servers)
            raise SourceError(f"kafka.bootstrap_servers: cannot use {servers}: {exc}") from None
        missing = [t for t in (*s.topics, s.dead_letter_topic) if t not in topics]
        if missing:
            await self._stop_clients(consumer, producer)
            raise ConfigError(f"kafka: topic(s) {', '.join(missing)} do not exist on the brokers")
        self._consumer, self._producer = consumer, producer
        consumer.subscribe(topics=list(s.topics), listener=_Listener(self))
        self._ticker = asyncio.create_task(self._tick(), name="kafka-commit")
        log.info("kafka source: group %s on %s", s.group_id, ", ".join(s.topics))

    async def close(self) -> None:
        """Stop handing out events, commit what is done, leave the group."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._room.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        with contextlib.suppress(KafkaError):
            await self.commit()
        await self._stop_clients(self._consumer, self._producer)

    @staticmethod
    async def _stop_clients(
        consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None
    ) -> None:
        for client in (consumer, producer):
            if client is not None:
                with contextlib.suppress(KafkaError):
                    await client.stop()

    def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise SourceError("kafka source used before start()")
        return self._consumer

    # -- handing out ------------------------------------------------------

    async def events(self) -> AsyncIterator[ChangeEvent]:
        consumer = self._client()
        while not self._closing.is_set():
            await self._report_gaps()
            if not self._buffer:
                await self._fetch(consumer, timeout_ms=200)
                continue
            # Backpressure before a record's events are registered, so the
            # bound counts only what the pipeline really holds.
            await self._wait_for_room(consumer)
            if self._closing.is_set():
                return
            mark, record = self._buffer.popleft()
            if self._marks.mark((record.topic, record.partition)) is not mark:
                continue  # revoked (and perhaps reassigned) since it was fetched
            for event in await self._take(mark, record):
                self.handed_out += 1
                yield event

    async def _fetch(self, consumer: AIOKafkaConsumer, *, timeout_ms: int) -> None:
        batch = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=self.settings.fetch_records
        )
        for tp, records in batch.items():
            mark = self._marks.mark((tp.topic, tp.partition))
            if mark is not None:
                self._buffer.extend((mark, r) for r in records)

    async def _take(self, mark: PartitionMark, record: Record) -> list[ChangeEvent]:
        """Parse one record; register its events (or dead-letter it)."""
        tp = (record.topic, record.partition)
        position = Position(record.topic, record.partition, record.offset)
        try:
            parsed = parse_message(
                record.value, self.settings.format, source=self.source_id, position=position
            )
        except ParseError as exc:
            if await self._dead_letter(
                position, record.timestamp, record.key, record.value, exc.reason
            ):
                self._marks.add(tp, record.offset, ())
                self.on_outcome(Outcome.DEAD_LETTER)
            return []
        events = [replace(e, observed=next(self._tokens)) for e in parsed.events]
        self.skipped += parsed.skipped
        for _ in range(parsed.skipped):
            self.on_outcome(Outcome.SKIPPED)
        self._marks.add(tp, record.offset, [e.observed for e in events])
        return events

    async def _wait_for_room(self, consumer: AIOKafkaConsumer) -> None:
        """Backpressure: pause fetching while max_in_flight events are out."""
        if self._marks.in_flight < self.settings.max_in_flight:
            return
        self.pauses += 1
        log.info("kafka source: %d events in flight, pausing fetches", self._marks.in_flight)
        while self._marks.in_flight >= self.settings.max_in_flight and not self._closing.is_set():
            consumer.pause(*consumer.assignment())
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 1.0)
            # Keep polling (paused partitions return nothing): a consumer that
            # stops polling for max_poll_interval_ms is thrown out of the group.
            await self._fetch(consumer, timeout_ms=0)
        consumer.resume(*consumer.assignment())

    # -- acknowledging ----------------------------------------------------

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        if outcome is Outcome.FAILED:
            self.failed += 1  # stays in flight: the watermark must not pass it
            return
        if outcome is Outcome.DEAD_LETTER:
            value = json.dumps(_describe(event)).encode()
            reason = "the pipeline could not handle this event"
            if not await self._dead_letter(event.position, 0, None, value, reason):
                return
        pos = event.position
        if not self._marks.done((pos.topic, pos.partition), pos.offset, event.observed):
            log.debug("kafka source: done() for an event no longer in flight (revoked)")
        if self._marks.in_flight < self.settings.max_in_flight:
            self._room.set()

    async def _dead_letter(
        self,
        where: Position,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
    ) -> bool:
        """Produce to the dead-letter topic; False if closed before the brokers took it."""
        assert self._producer is not None
        ok = await produce_until_acked(
            self._producer,
            self.settings.dead_letter_topic,
            value,
            key=key,
            headers=dead_letter_headers(where, timestamp_ms, reason),
            closing=self._closing,
        )
        if ok:
            self.dead_letters += 1
            log.warning(
                "kafka source: %s[%d]@%d dead-lettered: %s",
                where.topic, where.partition, where.offset, reason,
            )  # fmt: skip
        return ok

    async def commit(self) -> dict[TP, int]:
        """Commit every watermark that moved; returns what was committed."""
        async with self._commit_lock:
            return await self._commit_locked(None)

    async def _commit_locked(self, only: list[TP] | None) -> dict[TP, int]:
        offsets = self._marks.commits(only)
        if not offsets or self._consumer is None:
            return {}
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except CommitFailedError:
            # The group rebalanced under us: the listener committed what was
            # done for the partitions that left; the rest is committed later.
            log.info("kafka source: commit skipped by a rebalance")
            return {}
        self._marks.committed(offsets)
        return offsets

    async def _tick(self) -> None:
        """Commit watermarks and refresh log ends on a period."""
        period = self.settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                await self.commit()
                await self._refresh_log_ends()
            except KafkaError as exc:
                log.warning("kafka source: commit failed (%s); retrying", type(exc).__name__)

    # -- rebalance --------------------------------------------------------

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in revoked]
        async with self._commit_lock:
            try:
                await self._commit_locked(tps)
            except KafkaError as exc:
                log.warning("kafka source: commit on revoke failed (%s)", type(exc).__name__)
        for tp in tps:
            dropped = self._marks.revoke(tp)
            self._log_end.pop(tp, None)
            self.dropped_on_revoke += dropped
            if dropped:
                log.info("kafka source: %s[%d] revoked, %d events in flight dropped", *tp, dropped)
        self._room.set()

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._client()
        if not assigned:
            return
        starts = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            committed = await consumer.committed(tp)
            position = await consumer.position(tp)
            if committed is not None:
                # Inside the listener, the position of a partition taken over
                # from a dead member can already be its log end (seen with
                # aiokafka 0.14): reading on from there would skip every event
                # between the group's watermark and the end. Start where the
                # group committed (or the log start, past a gap).
                position = max(committed, starts[tp])
                consumer.seek(tp, position)
            key = (tp.topic, tp.partition)
            self._marks.assign(key, position)
            self._log_end[key] = ends[tp]
            self._check_gap(key, committed, starts[tp], position)
        log.info("kafka source: assigned %s", sorted((t.topic, t.partition) for t in assigned))

    def _check_gap(self, tp: TP, committed: int | None, log_start: int, position: int) -> None:
        lost = committed < log_start if committed is not None else position > 0
        if not lost:
            return
        gap = Gap(tp[0], tp[1], committed, log_start)
        self.gaps += 1
        self._pending_gaps.append(gap)
        log.warning(
            "kafka source: GAP on %s[%d]: committed offset %s, log starts at %d: events were "
            "lost to retention or offset expiry; a listing reconcile is needed",
            tp[0], tp[1], committed, log_start,
        )  # fmt: skip

    async def _report_gaps(self) -> None:
        """Run the gap hook before more events are handed out."""
        while self._pending_gaps:
            gap = self._pending_gaps.pop(0)
            if self.on_gap is not None:
                result = self.on_gap(gap)
                if inspect.isawaitable(result):
                    await result

    # -- backlog and lag --------------------------------------------------

    async def _refresh_log_ends(self) -> None:
        consumer = self._client()
        assigned = list(consumer.assignment())
        if assigned:
            ends = await consumer.end_offsets(assigned)
            for tp, end in ends.items():
                if self._marks.mark((tp.topic, tp.partition)) is not None:
                    self._log_end[(tp.topic, tp.partition)] = end

    def _end(self, tp: TP) -> int:
        end = self._log_end.get(tp, 0)
        if self._consumer is not None:
            high = self._consumer.highwater(TopicPartition(*tp))
            if high is not None:
                end = max(end, high)
        return end

    def backlog(self) -> Backlog:
        """Records not yet handed out: fetched and waiting, or still in Kafka."""
        events = 0
        for tp in self._marks.partitions():
            mark = self._marks.mark(tp)
            assert mark is not None
            events += max(0, self._end(tp) - mark.next_offset)
        buffered = [
            r.timestamp for m, r in self._buffer if self._marks.mark((r.topic, r.partition)) is m
        ]
        oldest = min(buffered) * 1_000_000 if buffered else None
        return Backlog(events, oldest)

    def lag(self) -> dict[TP, int]:
        """Per partition: log end minus the watermark (what is not yet acknowledged)."""
        out = {}
        for tp in self._marks.partitions():
            mark = self._marks.mark(tp)
            assert mark is not None
            out[tp] = max(0, self._end(tp) - mark.watermark())
        return out

    @property
    def in_flight(self) -> int:
        return self._marks.in_flight


def _describe(event: ChangeEvent) -> dict[str, Any]:
    return {
        "bucket": event.bucket,
        "key": event.key,
        "kind": str(event.kind),
        "version_id": event.version_id,
        "etag": event.etag,
        "size": event.size,
        "sequencer": event.sequencer,
        "event_time_ns": event.event_time_ns,
    }
