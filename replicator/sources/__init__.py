"""Sources: where ChangeEvents come from (the first room of the daemon's flow).

One small interface, implemented by the directory watcher (``fswatch``) and
the Kafka consumer (``kafka``), so the pipeline never knows which it reads:
events flow out of :meth:`Source.events`; each one comes back exactly once
through :meth:`Source.done` with its outcome, and only then may the source
acknowledge it (commit a Kafka offset watermark, forget a watched change).
Nothing flows back up otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Protocol

from replicator.events import ChangeEvent
from replicator.records import record


class Outcome(StrEnum):
    """How an event ended; every outcome but FAILED lets the source move on."""

    DURABLE = "durable"  # its manifest is at every peer
    SUPERSEDED = "superseded"  # the object moved on before it was read
    SKIPPED = "skipped"  # nothing to replicate (test event, ignored name)
    DEAD_LETTER = "dead_letter"  # unparseable / unhandleable, sent to the DLQ
    FAILED = "failed"  # not done: must not be acknowledged (e.g. 403)


@record(frozen=True, slots=True)
class Backlog:
    """Changes the source knows of but has not handed out yet (RPO input)."""

    events: int = 0
    oldest_time_ns: int | None = None  # event (or record) time of the oldest


class Source(Protocol):
    name: str

    async def start(self) -> None:
        """Connect / set up watches; raise ConfigError or StoreError on failure."""
        ...

    def events(self) -> AsyncIterator[ChangeEvent]:
        """Changes in arrival order; ends when the source is closed."""
        ...

    async def done(self, event: ChangeEvent, outcome: Outcome) -> None:
        """Report an event handed out by :meth:`events` as finished."""
        ...

    def backlog(self) -> Backlog:
        """Not yet handed out (for Kafka: between the consumer and the log end)."""
        ...

    async def close(self) -> None:
        """Stop handing out events; acknowledge what is done."""
        ...
