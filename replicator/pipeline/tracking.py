"""The service's outcomes: each lane's, and the event's once every lane is done.

An event handed out by the source is *tracked* at the lanes it is pending
at (:class:`Track`); each lane finishes it as durable, superseded or
failed, and the source hears ``done`` once every one of them has. The
lane's *policy* (``lanes.Policy``) decides what a failure is: the daemon
backs off and keeps the version (retry forever); a run with an end
(backfill) marks a peer whose retries are spent *down* for the run, and
every version it still wants finishes FAILED there.

An :class:`Observer` hears each lane's outcome as it happens: the daemon's
logs them (``daemon.LogObserver``), backfill's summary counts them. Neither
the metrics nor structlog are imported here: a backfill loads neither (it
starts faster, and its ``--json`` output is the only thing on stdout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import field
from typing import Protocol

from replicator.events import ChangeEvent
from replicator.pipeline.lanes import Lane, Policy, peer_failure
from replicator.records import record
from replicator.sources import Outcome, Source

#: The lanes (by name) an event is pending at; None: every lane.
Route = Callable[[ChangeEvent], Collection[str] | None]


@record
class Track:
    """An event handed out by the source, until every lane is done with it."""

    lanes: set[str]
    copies: int = 1  # a source may hand out an equal event twice
    superseded: bool = False
    failed: bool = False

    def outcome(self) -> Outcome:
        if self.failed:
            return Outcome.FAILED
        return Outcome.SUPERSEDED if self.superseded else Outcome.DURABLE


class Meter(Protocol):
    """What the service measures (``metrics.Telemetry`` in the daemon)."""

    def pending(self, destination: str, event: ChangeEvent, size: int) -> None: ...
    def durable(
        self,
        destination: str,
        event: ChangeEvent,
        *,
        shipped_bytes: int,
        deduplicated_bytes: int,
    ) -> None: ...
    def settled(self, destination: str, event: ChangeEvent) -> None: ...
    def outcome(self, source: str, outcome: str) -> None: ...
    def source_bytes(self, n: int) -> None: ...
    def destination_error(self, destination: str, operation: str, error: str) -> None: ...
    def set_peer_up(self, destination: str, up: bool) -> None: ...


class NoMeter:
    """Measures nothing (a run with an end reports its summary instead)."""

    def pending(self, destination: str, event: ChangeEvent, size: int) -> None:
        return None

    def durable(
        self,
        destination: str,
        event: ChangeEvent,
        *,
        shipped_bytes: int,
        deduplicated_bytes: int,
    ) -> None:
        return None

    def settled(self, destination: str, event: ChangeEvent) -> None:
        return None

    def outcome(self, source: str, outcome: str) -> None:
        return None

    def source_bytes(self, n: int) -> None:
        return None

    def destination_error(self, destination: str, operation: str, error: str) -> None:
        return None

    def set_peer_up(self, destination: str, up: bool) -> None:
        return None


@record
class Job:
    """One key's version, for every lane that wants exactly it."""

    key: str
    event: ChangeEvent
    large: bool = False
    lanes: list[Lane] = field(default_factory=list)


class Observer:
    """Hears each lane's outcome of each event; this one ignores them all."""

    def durable(
        self, lane: str, event: ChangeEvent, written: bool, shipped: int, deduplicated: int
    ) -> None:
        """Durable at ``lane`` (``written``: False when its manifest was there)."""

    def failed(self, lane: str | None, event: ChangeEvent, exc: BaseException) -> None:
        """Failed at ``lane``, or (None) for every lane: it could not be read."""

    def behind(self, lane: str, event: ChangeEvent) -> None:
        """Left out of a shared read for being behind: read again for it alone."""

    def down(self, lane: str, reason: str) -> None:
        """A lane of a run is down: its retries are spent."""

    def not_sent(self, lane: str, event: ChangeEvent) -> None:
        """Not sent to ``lane``: it is down for the run."""

    def read(self, event: ChangeEvent, size: int) -> None:
        """``size`` bytes of ``event``'s version read from the source."""

    def retrying(self, lane: str, op: str, exc: BaseException, delay: float) -> None:
        """A lane that failed takes no work for ``delay`` seconds (``Policy.RETRY``)."""

    def back(self, lane: str) -> None:
        """A lane that failed succeeded again."""


class Outcomes:
    """The outcome half of :class:`~replicator.pipeline.service.Service`."""

    source: Source
    telemetry: Meter
    observer: Observer
    _tracks: dict[ChangeEvent, Track]
    #: Active versions found to be a write seen half done, with the lanes
    #: that must not write their manifest.
    _torn: dict[ChangeEvent, set[str]]
    _work: asyncio.Event
    _room: asyncio.Event
    _tasks: set[asyncio.Task[None]]  # commits
    _reports: set[asyncio.Task[None]]  # source.done calls
    #: Durable events not reported yet (event, copies), and the one task
    #: reporting them (``_done``).
    _durable_reports: list[tuple[ChangeEvent, int]]
    _reporter: asyncio.Task[None] | None

    def _start_tracking(self) -> None:
        self._tracks = {}
        self._torn = {}  # see ``Service.take``
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks = set()
        self._reports = set()
        self._durable_reports = []
        self._reporter = None

    def _spawn(self, coro: Awaitable[None], into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _durable(
        self,
        lane: Lane,
        event: ChangeEvent,
        shipped: int,
        deduplicated: int,
        *,
        written: bool = True,
    ) -> None:
        if lane.succeeded():
            self.telemetry.set_peer_up(lane.name, True)
            self.observer.back(lane.name)
        self.telemetry.durable(
            lane.name, event, shipped_bytes=shipped, deduplicated_bytes=deduplicated
        )
        self.observer.durable(lane.name, event, written, shipped, deduplicated)
        covered = lane.covered.get(event.key)
        if covered is not None and covered.event_time_ns <= event.event_time_ns:
            del lane.covered[event.key]
            self.telemetry.settled(lane.name, covered)
        self._finish(lane, event)

    def _behind(self, lane: Lane, event: ChangeEvent) -> None:
        """Left out of a read for being behind (ship.py): the version stays
        wanted at the lane, which reads it again alone, so a slow peer does
        not pace the others. No backoff: the peer is slow, not failing."""
        if same_event(lane.active.get(event.key), event):
            del lane.active[event.key]
        if event.key in lane.want:  # a newer version came meanwhile
            self._finish(lane, event, superseded=True)
        else:
            lane.want[event.key] = event  # still pending at this peer
        self._work.set()

    def _lane_failed(self, lane: Lane, event: ChangeEvent, exc: BaseException, op: str) -> None:
        """The lane's policy: back off and keep the version wanted (unless a
        newer one replaced it), or, in a run, fail it there; a peer failure
        then takes the lane down for the run."""
        self.telemetry.destination_error(lane.name, op, type(exc).__name__)
        self.observer.failed(lane.name, event, exc)
        if lane.policy is Policy.RUN:
            if peer_failure(exc):
                self._lane_down(lane, exc)
            self._finish(lane, event, failed=True)
            return
        delay = lane.failed()
        self.telemetry.set_peer_up(lane.name, False)
        self.observer.retrying(lane.name, op, exc, delay)
        self._behind(lane, event)  # wanted again, after the backoff

    def take_down(self, lane: Lane, exc: BaseException) -> None:
        """A run's lane found failing outside the service (a listing's check)."""
        self._lane_down(lane, exc)

    def _lane_down(self, lane: Lane, exc: BaseException) -> None:
        """Down for the run: nothing more is sent to it, what it still
        wants finishes FAILED there (the other lanes go on)."""
        if lane.down is not None:
            return
        lane.down = f"{type(exc).__name__}: {exc}"
        lane.up = False
        self.telemetry.set_peer_up(lane.name, False)
        self.observer.down(lane.name, lane.down)
        for event in lane.want.events():
            del lane.want[event.key]
            self._not_sent(lane, event)

    def _not_sent(self, lane: Lane, event: ChangeEvent) -> None:
        self.observer.not_sent(lane.name, event)
        self._finish(lane, event, failed=True)

    def _finish(
        self, lane: Lane, event: ChangeEvent, *, superseded: bool = False, failed: bool = False
    ) -> None:
        """``lane`` is done with ``event``; the source hears once every lane is."""
        if same_event(lane.active.get(event.key), event):
            del lane.active[event.key]
        torn = self._torn.get(event) if self._torn else None
        if torn is not None:
            torn.discard(lane.name)
            if not torn:
                del self._torn[event]
        if failed:
            self.telemetry.settled(lane.name, event)
        elif superseded and (settled := lane.cover(event)) is not None:
            self.telemetry.settled(lane.name, settled)
        track = self._tracks.get(event)
        if track is not None:
            track.superseded |= superseded
            track.failed |= failed
            track.lanes.discard(lane.name)
            if not track.lanes:
                self._done(event, track)
        self._room.set()
        self._work.set()

    def _done(self, event: ChangeEvent, track: Track) -> None:
        del self._tracks[event]
        if track.failed or track.superseded:
            # Rare, and its ``done`` may take a while (a listing refreshes
            # the object, Kafka dead-letters it): a task of its own.
            self._spawn(self._report(event, track), self._reports)
            return
        # Durable events finished together (a batch's) are reported by one
        # task: a task each cost more than everything else done per event.
        self._durable_reports.append((event, track.copies))
        if self._reporter is None:
            self._reporter = asyncio.ensure_future(self._report_durable())
            self._reports.add(self._reporter)
            self._reporter.add_done_callback(self._reports.discard)

    async def _report_durable(self) -> None:
        try:
            while self._durable_reports:
                reports, self._durable_reports = self._durable_reports, []
                for event, copies in reports:
                    try:
                        await self._tell(event, Outcome.DURABLE, copies)
                    except Exception as exc:  # as a task of its own would: logged, the rest go on
                        asyncio.get_running_loop().call_exception_handler(
                            {"message": "reporting a durable event failed", "exception": exc}
                        )
        finally:
            self._reporter = None

    async def _report(self, event: ChangeEvent, track: Track) -> None:
        await self._tell(event, track.outcome(), track.copies)

    async def _tell(self, event: ChangeEvent, outcome: Outcome, copies: int) -> None:
        for _ in range(copies):
            self.telemetry.outcome(self.source.name, str(outcome))
            await self.source.done(event, outcome)


def same_event(held: ChangeEvent | None, event: ChangeEvent) -> bool:
    """``held == event``, answered by identity first: the lanes hold the very
    event the service took, and comparing two events field by field costs
    more than the rest of finishing one."""
    return held is event or (held is not None and held == event)
