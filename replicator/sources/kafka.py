"""KafkaSource: S3 change events from a Kafka consumer group (docs/kafka.md).

Each record is parsed (``s3events``) into ChangeEvents handed out with a
unique ``observed`` token; its offset is committed only once every one of its
events came back through :meth:`KafkaSource.done` with an outcome other than
FAILED (``watermark``). Unparseable records go to the dead-letter topic. A
rebalance commits what is done and drops the rest (the new owner reads it
again). Also: backlog and lag, gap detection with an ``on_gap`` hook (never a
jump to the latest offset), and backpressure (pausing at ``max_in_flight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError

from replicator.config import KafkaSettings, S3SourceSettings, Settings
from replicator.errors import ConfigError, SourceError
from replicator.events import ChangeEvent, Position
from replicator.origins.s3 import S3Origin
from replicator.sources import Backlog, Outcome
from replicator.sources.kafka_backlog import BacklogClock
from replicator.sources.kafka_clients import (
    Record,
    dead_letter_headers,
    event_dead_letter,
    make_consumer,
    make_producer,
    produce_until_acked,
    stop_clients,
)
from replicator.sources.kafka_group import GapHook, GroupMember, Listener
from replicator.sources.kafka_reconnect import CoordinatorHealth, Reconnecting, stop_bounded
from replicator.sources.s3events import ParseError, parse_message
from replicator.sources.watermark import Gap, PartitionMark, Watermarks
from replicator.sources.watermark import TopicPartition as TP

__all__ = ["Gap", "GapHook", "KafkaSource", "kafka_source"]

log = logging.getLogger(__name__)


#: Told of each outcome settled inside the source (dead letters of records
#: that did not parse, skipped test events and other buckets' events), which
#: the pipeline never sees: the daemon counts them in events_total.
OutcomeHook = Callable[[Outcome], None]


class KafkaSource(Reconnecting, GroupMember):
    """The Source of S3 notifications read from Kafka (see the module docstring)."""

    name = "kafka"

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        source_id: str = "s3",
        bucket: str | None = None,
        prefix: str = "",
        on_gap: GapHook | None = None,
        on_outcome: OutcomeHook | None = None,
    ):
        self.settings = settings
        self.source_id = source_id  # SourceIdentity.source of the S3 origin
        # Only events of this bucket (and prefix) are handed out: a topic may
        # carry several buckets' notifications, and the origin reads just one.
        self.bucket = bucket
        self.prefix = prefix
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
        self.reconnects = 0  # consumers replaced after losing the group coordinator
        self._marks = Watermarks()
        self._tokens = itertools.count(1)
        self._buffer: deque[tuple[PartitionMark, Record]] = deque()
        self._clock = BacklogClock(settings)
        self._pending_gaps: list[Gap] = []
        self._unready: set[TopicPartition] = set()  # assigned, no watermark yet
        self._ready_lock = asyncio.Lock()
        self._room = asyncio.Event()
        self._closing = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._fetch_lock = asyncio.Lock()  # held around getmany(); a rebuild takes it
        self._health = CoordinatorHealth(settings)
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
            await stop_clients(consumer, producer)
            servers = ",".join(s.bootstrap_servers)
            raise SourceError(f"kafka.bootstrap_servers: cannot use {servers}: {exc}") from None
        missing = [t for t in (*s.topics, s.dead_letter_topic) if t not in topics]
        if missing:
            await stop_clients(consumer, producer)
            raise ConfigError(f"kafka: topic(s) {', '.join(missing)} do not exist on the brokers")
        self._producer = producer
        self._subscribe(consumer)
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
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the clients are stopped and the commit tried all the same
                log.error("kafka source: the commit loop had failed (%s: %s)",
                          type(exc).__name__, exc)  # fmt: skip
        await self._final_commit()
        await stop_bounded(self._consumer)
        await stop_bounded(self._producer)
        await self._clock.stop()

    async def _final_commit(self) -> None:
        """Bounded (a lost coordinator cannot hold the stop); on failure one line
        says what stays uncommitted: those events are durable and read again by
        the next member, so the stop itself still succeeds."""
        try:
            await self.commit()
        except KafkaError as exc:
            left = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(self._marks.commits().items()))
            log.warning("kafka source: final commit to group %s failed (%s); not committed: %s "
                        "(read again by the next member)", self.settings.group_id,
                        type(exc).__name__, left or "nothing")  # fmt: skip

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        """Make a started consumer the source's own and join the group with it."""
        self._consumer = consumer
        self._health.ok()
        consumer.subscribe(topics=list(self.settings.topics), listener=Listener(self, consumer))

    def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise SourceError("kafka source used before start()")
        return self._consumer

    # -- handing out ------------------------------------------------------

    async def events(self) -> AsyncIterator[ChangeEvent]:
        self._client()  # started
        while not self._closing.is_set():
            if self._consumer is None:  # being replaced (kafka_reconnect)
                await asyncio.sleep(0.1)
                continue
            if self._unready:
                await self._ready_up()
            await self._report_gaps()
            # Backpressure before fetching or registering a record's events:
            # nothing more is taken in while the pipeline holds the bound.
            await self._wait_for_room()
            if self._closing.is_set():
                return
            if not self._buffer:
                await self._fetch(timeout_ms=200)
                continue
            mark, record = self._buffer.popleft()
            if self._marks.mark((record.topic, record.partition)) is not mark:
                continue  # revoked (and perhaps reassigned) since it was fetched
            if record.offset < mark.next_offset:
                continue  # fetched before a seek to the assignment's start: read again
            for event in await self._take(mark, record):
                self.handed_out += 1
                yield event

    async def _fetch(self, *, timeout_ms: int) -> None:
        async with self._fetch_lock:
            consumer = self._consumer
            if consumer is None:
                return
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
            produced = await self._dead_letter(
                position, record.timestamp, record.key, record.value, exc.reason
            )
            # The partition may have been revoked while the dead letter was produced.
            if produced and self._marks.mark(tp) is mark:
                mark.add(record.offset, ())
                self.on_outcome(Outcome.DEAD_LETTER)
            return []
        mine = [e for e in parsed.events if self._wanted(e)]
        events = [replace(e, observed=next(self._tokens)) for e in mine]
        skipped = parsed.skipped + len(parsed.events) - len(mine)
        self.skipped += skipped
        for _ in range(skipped):
            self.on_outcome(Outcome.SKIPPED)
        self._marks.add(tp, record.offset, [e.observed for e in events])
        return events

    def _wanted(self, event: ChangeEvent) -> bool:
        if self.bucket is not None and event.bucket != self.bucket:
            return False
        return event.key.startswith(self.prefix)

    async def _wait_for_room(self) -> None:
        """Backpressure: pause fetching while max_in_flight events are out.

        The consumer is looked up after each wait: it may have been replaced."""
        if self._marks.in_flight < self.settings.max_in_flight:
            return
        self.pauses += 1
        log.info("kafka source: %d events in flight, pausing fetches", self._marks.in_flight)
        while self._marks.in_flight >= self.settings.max_in_flight and not self._closing.is_set():
            if self._consumer is not None:
                self._consumer.pause(*self._consumer.assignment())
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 1.0)
            # Keep polling (paused partitions return nothing): a consumer that
            # stops polling for max_poll_interval_ms is thrown out of the group.
            await self._fetch(timeout_ms=0)
        consumer = self._consumer
        if consumer is not None:
            consumer.resume(*[tp for tp in consumer.assignment() if tp not in self._unready])

    # -- acknowledging ----------------------------------------------------

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        if outcome is Outcome.FAILED:
            self.failed += 1  # stays in flight: the watermark must not pass it
            return
        if outcome is Outcome.DEAD_LETTER:
            value = event_dead_letter(event)
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
        consumer = self._consumer
        if not offsets or consumer is None:
            return {}
        log.debug("kafka source: committing %s", offsets)
        request = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        try:
            # Bounded: aiokafka's commit waits for the coordinator without end.
            await asyncio.wait_for(consumer.commit(request), self._health.call_timeout)
        except CommitFailedError:
            # The group rebalanced under us: the listener committed what was
            # done for the partitions that left; the rest is committed later.
            log.info("kafka source: commit skipped by a rebalance")
            return {}
        except TimeoutError:
            raise KafkaTimeoutError(f"no answer in {self._health.call_timeout:g} s") from None
        self._health.ok()
        self._marks.committed(offsets)
        return offsets

    async def _tick(self) -> None:
        """Commit watermarks and refresh log ends on a period."""
        period = self.settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(period)
            try:
                await self.commit()
            except KafkaError as exc:  # CommitFailedError (a rebalance) is not raised
                self._health.failed()  # readiness: the coordinator did not take the commit
                log.warning("kafka source: commit failed (%s); retrying", type(exc).__name__)
            try:
                await self._keep_connected()
            except Exception as exc:  # the commit loop must outlive any one reconnect attempt
                log.error("kafka source: reconnecting failed (%s: %s); retrying",
                          type(exc).__name__, exc)  # fmt: skip
            # Apart from the commit: log ends only feed the backlog and lag
            # figures, and their failing must never hold back a commit.
            try:
                consumer = self._consumer
                if consumer is not None:
                    fetched = {tp for tp, _ in self._fetched()}
                    refresh = self._clock.refresh(consumer, self._marks, fetched)
                    # Bounded: an unanswered ListOffsets held this loop 40 s.
                    await asyncio.wait_for(refresh, self._health.call_timeout)
            except (KafkaError, TimeoutError) as exc:
                log.warning("kafka source: log ends unknown (%s); retrying", type(exc).__name__)

    # -- backlog and lag --------------------------------------------------

    def backlog(self) -> Backlog:
        """Records not yet handed out: fetched and waiting, or still in Kafka."""
        return self._clock.backlog(self._consumer, self._marks, self._fetched())

    def lag(self) -> dict[TP, int]:
        """Per partition: log end minus the watermark (what is not yet acknowledged)."""
        return self._clock.lag(self._consumer, self._marks)

    def _fetched(self) -> list[tuple[TP, int]]:
        """(partition, Kafka timestamp) of records fetched and not handed out yet."""
        out = []
        for mark, r in self._buffer:
            if self._marks.mark((r.topic, r.partition)) is mark:
                out.append(((r.topic, r.partition), r.timestamp))
        return out

    @property
    def in_flight(self) -> int:
        return self._marks.in_flight


def kafka_source(settings: Settings, *, on_gap: GapHook | None = None) -> KafkaSource:
    """The daemon's entry: a KafkaSource for a validated configuration.

    Events name objects of the ``[source]`` bucket (under its prefix), read
    through the S3 origin, so manifests record the origin's source id."""
    if settings.kafka is None:
        raise ConfigError("the configuration has no [kafka] table")
    if not isinstance(settings.source, S3SourceSettings):
        raise ConfigError("source.type: a [kafka] table needs an s3 source")
    return KafkaSource(
        settings.kafka,
        source_id=S3Origin.source_id,
        bucket=settings.source.bucket,
        prefix=settings.source.prefix,
        on_gap=on_gap,
    )
