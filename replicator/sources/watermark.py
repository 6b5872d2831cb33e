"""Kafka offsets as a watermark: commit only what is done, never past a gap.

Vocabulary: a *record* is one Kafka message at an offset of a partition; it
carries zero or more events (an S3 notification may hold several records),
each handed out with a unique *token* (``ChangeEvent.observed``). A record is
*done* when every one of its tokens came back (a record with no events --
a test event, a dead letter already produced -- is done when added). The
*watermark* of a partition is the first offset that is not done: everything
below it is done, so committing it (Kafka's "next offset to read") never
skips unfinished work, whatever order the pipeline finishes in.

Pure bookkeeping, no I/O: the consumer owns one :class:`Watermarks`, adds
each record as it hands it out, reports tokens done, and commits
:meth:`Watermarks.commits`. Offsets need not be contiguous (compaction,
transaction markers): the watermark of an idle partition is one past the
last record added.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of a partition that no consumer of the group will ever read."""

    topic: str
    partition: int
    committed: int | None  # the group's offset (None: the group had none)
    log_start: int  # the first offset the broker still holds


def find_gap(tp: TopicPartition, committed: int | None, log_start: int, start: int) -> Gap | None:
    """A gap when retention deleted events the group never acknowledged
    (committed below the log start), or when a group without offsets starts
    past offset 0 (its offsets expired, or it is new on an old topic): either
    way some events will never be read, and only a listing can recover them."""
    lost = committed < log_start if committed is not None else start > 0
    return Gap(tp[0], tp[1], committed, log_start) if lost else None


class PartitionMark:
    """One assignment of one partition: its records in flight and its watermark."""

    def __init__(self, start: int):
        self._pending: dict[int, set[int]] = {}  # offset -> tokens not yet done
        self._order: deque[int] = deque()  # offsets in flight, ascending
        self._next = start  # one past the last record added
        self.committed = start  # the last watermark the group holds

    def add(self, offset: int, tokens: Collection[int]) -> None:
        if offset < self._next:
            raise ValueError(f"offset {offset} added after {self._next - 1}")
        self._next = offset + 1
        if tokens:
            self._pending[offset] = set(tokens)
            self._order.append(offset)

    def done(self, offset: int, token: int) -> bool:
        """Mark one token done; False if it is not in flight here (stale, repeated)."""
        tokens = self._pending.get(offset)
        if tokens is None or token not in tokens:
            return False
        tokens.discard(token)
        if not tokens:
            del self._pending[offset]
        return True

    def watermark(self) -> int:
        """The first offset not yet done: what may be committed."""
        while self._order and self._order[0] not in self._pending:
            self._order.popleft()  # done records leave lazily, in offset order
        return self._order[0] if self._order else self._next

    @property
    def next_offset(self) -> int:
        """One past the last record added: where handing out goes on."""
        return self._next

    @property
    def in_flight(self) -> int:
        return sum(len(t) for t in self._pending.values())


class Watermarks:
    """The marks of every partition the consumer holds now."""

    def __init__(self) -> None:
        self._marks: dict[TopicPartition, PartitionMark] = {}
        self._in_flight = 0

    def assign(self, tp: TopicPartition, start: int) -> PartitionMark:
        """A (re)assigned partition starts afresh at the consumer's position."""
        self.revoke(tp)
        mark = self._marks[tp] = PartitionMark(start)
        return mark

    def revoke(self, tp: TopicPartition) -> int:
        """Forget a partition; returns the events in flight that were dropped."""
        mark = self._marks.pop(tp, None)
        if mark is None:
            return 0
        dropped = mark.in_flight
        self._in_flight -= dropped
        return dropped

    def mark(self, tp: TopicPartition) -> PartitionMark | None:
        return self._marks.get(tp)

    def partitions(self) -> list[TopicPartition]:
        return list(self._marks)

    def add(self, tp: TopicPartition, offset: int, tokens: Collection[int]) -> None:
        mark = self._marks.get(tp)
        if mark is None:
            raise KeyError(f"partition {tp} is not assigned")
        mark.add(offset, tokens)
        self._in_flight += len(set(tokens))

    def done(self, tp: TopicPartition, offset: int, token: int) -> bool:
        """One event finished; False when its partition was revoked meanwhile."""
        mark = self._marks.get(tp)
        if mark is None or not mark.done(offset, token):
            return False
        self._in_flight -= 1
        return True

    @property
    def in_flight(self) -> int:
        """Events handed out and not yet done, over every partition."""
        return self._in_flight

    def not_handed_out(self, log_ends: dict[TopicPartition, int]) -> int:
        """Records between what was handed out and each partition's log end."""
        return sum(
            max(0, log_ends.get(tp, 0) - mark.next_offset) for tp, mark in self._marks.items()
        )

    def lag(self, log_ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Per partition: log end minus the watermark (not yet acknowledged)."""
        return {
            tp: max(0, log_ends.get(tp, 0) - mark.watermark()) for tp, mark in self._marks.items()
        }

    def commits(self, only: Collection[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Watermarks that moved past what the group holds (to commit now)."""
        out = {}
        for tp, mark in self._marks.items():
            if only is not None and tp not in only:
                continue
            wm = mark.watermark()
            if wm > mark.committed:
                out[tp] = wm
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """The group now holds these offsets (after a successful commit)."""
        for tp, offset in offsets.items():
            mark = self._marks.get(tp)
            if mark is not None and offset > mark.committed:
                mark.committed = offset
