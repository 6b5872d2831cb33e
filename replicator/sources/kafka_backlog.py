"""What is still in Kafka: log ends, and the age of the oldest record not handed out.

The RPO counts events still waiting in Kafka (DESIGN: between the committed
offset and the log end), aged by the oldest such record's Kafka timestamp
until it is read. The consumer knows the timestamps of what it fetched; for a
partition with records at the broker and none fetched (paused by
backpressure, or simply not reached yet) a *probe* -- a second consumer
outside the group, assigned by hand -- reads the one record at the
partition's next offset, once per offset, so the age is known exactly.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from replicator.config import KafkaSettings
from replicator.sources import Backlog
from replicator.sources.kafka_clients import common_options
from replicator.sources.watermark import TopicPartition as TP
from replicator.sources.watermark import Watermarks

log = logging.getLogger(__name__)

#: A probe needs one record per partition; Kafka still returns a whole first
#: batch when it is larger (KIP-74), so this only bounds the common case.
_PROBE_FETCH_BYTES = 64 * 1024


class BacklogClock:
    def __init__(self, settings: KafkaSettings):
        self._settings = settings
        self.log_end: dict[TP, int] = {}
        self._known: dict[TP, tuple[int, int]] = {}  # tp -> (next offset, timestamp ms)
        self._probe: AIOKafkaConsumer | None = None

    async def stop(self) -> None:
        if self._probe is not None:
            with contextlib.suppress(KafkaError):
                await self._probe.stop()

    def forget(self, tp: TP) -> None:
        self.log_end.pop(tp, None)
        self._known.pop(tp, None)

    def end(self, consumer: AIOKafkaConsumer | None, tp: TP) -> int:
        """The log end: the last fetch's highwater, or the last ListOffsets answer."""
        end = self.log_end.get(tp, 0)
        high = consumer.highwater(TopicPartition(*tp)) if consumer is not None else None
        return max(end, high) if high is not None else end

    async def refresh(
        self, consumer: AIOKafkaConsumer, marks: Watermarks, fetched: set[TP]
    ) -> None:
        """Ask the brokers for log ends; probe partitions waiting with nothing fetched."""
        assigned = [tp for tp in consumer.assignment() if marks.mark((tp.topic, tp.partition))]
        if not assigned:
            return
        for tp, end in (await consumer.end_offsets(assigned)).items():
            self.log_end[(tp.topic, tp.partition)] = end
        wanted = {
            tp: offset
            for tp, offset in self._waiting(consumer, marks).items()
            if tp not in fetched and self.timestamp(tp, offset) is None
        }
        if wanted:
            await self._read_timestamps(wanted)

    def _waiting(self, consumer: AIOKafkaConsumer | None, marks: Watermarks) -> dict[TP, int]:
        """Partitions with records at the broker not handed out: their next offset."""
        out = {}
        for tp in marks.partitions():
            mark = marks.mark(tp)
            if mark is not None and self.end(consumer, tp) > mark.next_offset:
                out[tp] = mark.next_offset
        return out

    def backlog(
        self, consumer: AIOKafkaConsumer | None, marks: Watermarks, fetched: list[tuple[TP, int]]
    ) -> Backlog:
        """Records not handed out, aged by the oldest Kafka timestamp known of them."""
        ends = {tp: self.end(consumer, tp) for tp in marks.partitions()}
        times = [ts for _, ts in fetched]
        for tp, offset in self._waiting(consumer, marks).items():
            ts = self.timestamp(tp, offset)
            if ts is not None:
                times.append(ts)
        oldest = min(times) * 1_000_000 if times else None
        return Backlog(marks.not_handed_out(ends), oldest)

    def lag(self, consumer: AIOKafkaConsumer | None, marks: Watermarks) -> dict[TP, int]:
        return marks.lag({tp: self.end(consumer, tp) for tp in marks.partitions()})

    def timestamp(self, tp: TP, offset: int) -> int | None:
        known = self._known.get(tp)
        return known[1] if known is not None and known[0] == offset else None

    async def _read_timestamps(self, wanted: dict[TP, int]) -> None:
        probe = self._probe or await self._start_probe()
        parts = [TopicPartition(*tp) for tp in wanted]
        probe.assign(parts)
        for part in parts:
            probe.seek(part, wanted[(part.topic, part.partition)])
        batch = await probe.getmany(*parts, timeout_ms=500)
        for part, records in batch.items():
            tp = (part.topic, part.partition)
            if records and tp in wanted:  # the first record at or after the offset
                self._known[tp] = (wanted[tp], records[0].timestamp)

    async def _start_probe(self) -> AIOKafkaConsumer:
        """Kept only once started: a consumer whose start() failed (brokers
        away) has no fetcher, and a seek on it raised AttributeError, which
        ended the commit task for good (the offsets were never committed again)."""
        probe = AIOKafkaConsumer(
            **common_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=_PROBE_FETCH_BYTES,
        )
        try:
            await probe.start()
        except BaseException:
            with contextlib.suppress(KafkaError):
                await probe.stop()
            raise
        self._probe = probe
        return probe
