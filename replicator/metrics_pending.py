"""PendingSet: the changes not yet durable at one peer, oldest first.

Kept apart from :mod:`replicator.metrics` (which re-exports it) because it is
the one data structure there with an algorithm: the RPO is read from it at
every scrape, and every change passes through it twice.
"""

from __future__ import annotations

import heapq
import itertools

from replicator.events import ChangeEvent


class PendingSet:
    """Changes not yet durable at one peer; the oldest event time in O(log n).

    A heap with lazy deletion: ``remove`` only forgets the dict entry, and the
    heap drops stale tops when asked for the oldest. The heap is rebuilt when
    stale entries outnumber live ones, so memory stays proportional to what
    is pending. Adding an event that is already pending is a no-op, removing
    one that is not is a no-op (sources may deliver duplicates)."""

    def __init__(self) -> None:
        self._live: dict[ChangeEvent, tuple[int, int]] = {}  # event -> (entry id, size)
        self._heap: list[tuple[int, int, ChangeEvent]] = []
        self._ids = itertools.count()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._live)

    def add(self, event: ChangeEvent, size: int) -> bool:
        if event in self._live:
            return False
        entry = next(self._ids)
        self._live[event] = (entry, size)
        # The entry id is unique, so the event itself is never compared.
        heapq.heappush(self._heap, (event.event_time_ns, entry, event))
        self.bytes += size
        return True

    def remove(self, event: ChangeEvent) -> bool:
        live = self._live.pop(event, None)
        if live is None:
            return False
        self.bytes -= live[1]
        if len(self._heap) > 2 * len(self._live) + 1024:
            self._heap = [(e.event_time_ns, i, e) for e, (i, _) in self._live.items()]
            heapq.heapify(self._heap)
        return True

    def oldest_ns(self) -> int | None:
        heap = self._heap
        while heap:
            t, entry, event = heap[0]
            live = self._live.get(event)
            if live is not None and live[0] == entry:
                return t
            heapq.heappop(heap)
        return None
