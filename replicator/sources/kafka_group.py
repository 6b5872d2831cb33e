"""Group membership of the Kafka source: rebalances, new partitions, gaps.

A mixin of :class:`replicator.sources.kafka.KafkaSource`, kept apart because
it is the part that talks to the group coordinator: revoked partitions commit
their done watermark and drop their events in flight; an assigned partition
stays paused until it has been sought to its committed offset and has its
own watermark; a start past what the group acknowledged is a *gap*, reported
through the ``on_gap`` hook before more events are handed out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from replicator.config import KafkaSettings
from replicator.sources.kafka_backlog import BacklogClock
from replicator.sources.watermark import Gap, Watermarks, find_gap
from replicator.sources.watermark import TopicPartition as TP

log = logging.getLogger("replicator.sources.kafka")

GapHook = Callable[[Gap], Awaitable[None] | None]


class GroupMember:
    """Rebalance handling; the state is the KafkaSource's own."""

    settings: KafkaSettings
    on_gap: GapHook | None
    gaps: int
    dropped_on_revoke: int
    _marks: Watermarks
    _clock: BacklogClock
    _pending_gaps: list[Gap]
    _unready: set[TopicPartition]
    _ready_lock: asyncio.Lock
    _commit_lock: asyncio.Lock
    _room: asyncio.Event
    _closing: asyncio.Event
    _consumer: AIOKafkaConsumer | None

    async def _commit_locked(self, only: list[TP] | None) -> dict[TP, int]:
        raise NotImplementedError

    def _current(self, consumer: AIOKafkaConsumer) -> bool:
        """Is this the source's consumer now (not one replaced by kafka_reconnect)?"""
        return consumer is self._consumer

    async def _revoked(self, revoked: list[TopicPartition], consumer: AIOKafkaConsumer) -> None:
        if not self._current(consumer):
            return  # a replaced consumer's (kafka_reconnect): its partitions were dropped
        tps = [(tp.topic, tp.partition) for tp in revoked]
        async with self._commit_lock:
            try:
                await self._commit_locked(tps)
            except KafkaError as exc:
                log.warning("kafka source: commit on revoke failed (%s)", type(exc).__name__)
        self._unready.difference_update(revoked)
        for tp in tps:
            dropped = self._marks.revoke(tp)
            self._clock.forget(tp)
            self.dropped_on_revoke += dropped
            if dropped:
                log.info("kafka source: %s[%d] revoked, %d events in flight dropped", *tp, dropped)
        self._room.set()

    async def _assigned(self, assigned: list[TopicPartition], consumer: AIOKafkaConsumer) -> None:
        if not self._current(consumer):
            return
        # Paused until each partition has its watermark: a record fetched
        # before that could not be registered and would be skipped.
        self._unready.update(assigned)
        consumer.pause(*assigned)
        await self._ready_up()

    async def _ready_up(self) -> None:
        """Seek each new partition to its committed offset and give it a watermark.

        Retried from the events loop while the brokers cannot answer."""
        async with self._ready_lock:  # the listener and the events loop both call this
            if self._consumer is not None:
                await self._ready_up_locked(self._consumer)

    async def _ready_up_locked(self, consumer: AIOKafkaConsumer) -> None:
        todo = [tp for tp in self._unready if tp in consumer.assignment()]
        self._unready = set(todo)
        if not todo:
            return
        try:
            starts = await consumer.beginning_offsets(todo)
            ends = await consumer.end_offsets(todo)
            committed = {tp: await consumer.committed(tp) for tp in todo}
        except KafkaError as exc:
            log.warning("kafka source: offsets of new partitions unknown (%s)", type(exc).__name__)
            return
        if self._closing.is_set() or not self._current(consumer):
            return  # stopped or replaced meanwhile (close, kafka_reconnect): no seek on it
        for tp in todo:
            start = committed[tp]
            if start is None:
                start = starts[tp] if self.settings.auto_offset_reset == "earliest" else ends[tp]
            # Seek explicitly: getmany() runs while this callback awaits, so the
            # consumer's own position may already have moved on.
            consumer.seek(tp, start)
            key = (tp.topic, tp.partition)
            self._marks.assign(key, start)
            self._clock.log_end[key] = ends[tp]
            self._check_gap(key, committed[tp], starts[tp], start)
            log.info(
                "kafka source: assigned %s[%d] at %d (committed %s, log %d..%d)",
                tp.topic, tp.partition, start, committed[tp], starts[tp], ends[tp],
            )  # fmt: skip
        self._unready.difference_update(todo)
        if self._marks.in_flight < self.settings.max_in_flight:
            consumer.resume(*todo)

    def _check_gap(self, tp: TP, committed: int | None, log_start: int, start: int) -> None:
        gap = find_gap(tp, committed, log_start, start)
        if gap is None:
            return
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


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """One consumer's listener: a replaced consumer's callbacks are ignored."""

    def __init__(self, member: GroupMember, consumer: AIOKafkaConsumer):
        self.member = member
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.member._revoked(revoked, self.consumer)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.member._assigned(assigned, self.consumer)
