"""The pipeline as a service: changes from a source, durable at every peer.

Flow: the *intake* takes each ChangeEvent from the source and makes it
pending at every lane (:mod:`replicator.pipeline.lanes`), where it replaces
an older version of the same key that has not started (coalescing). Up to
``service.max_in_flight`` *workers* each take a *job*: one key's version,
for every lane that wants exactly it and may take work. The version is read
once (:func:`~replicator.pipeline.ship.ship`) and each lane then
*commits* on its own: its packs durable, then its manifest. A key is active
at most once per lane, so a lane writes a key's versions in order.

A lane that fails backs off and keeps the version (unless a newer one
replaced it meanwhile); the others go on. A lane that is *behind* (its
writer would wait for a pack upload at a peer whose last pack took over
``behind_seconds`` to write, while another lane's would not) is left out
of the read and keeps the version without backing off: it reads it again
alone, so a slow peer does not pace the others (backfill's rule). A
version replaced before it was durable at a lane stays *pending* there for
the RPO (the peer's copy is older) until a version as new is durable. An
event goes back to the source (``done``) once every lane is done with it:
DURABLE when it is durable at every peer, SUPERSEDED when the object moved
on before it was read (a later event carries the newer state), FAILED when
it could not be read.

Size classes: objects of at least ``service.large_object_size`` are
*large*. They have their own workers (``service.max_large_in_flight``) and
their own pack writer at each lane, so a large object being read, chunked
and packed never holds a small one back: small objects keep
``max_in_flight`` workers, and their packs seal and upload apart from the
large ones. Manifests of both classes go through each lane's group commit.

Memory: ``max_in_flight`` small objects read at once (two windows of about
their size each), ``max_large_in_flight`` large ones (three of the origin's
window size: ``windows.WINDOWS_AHEAD``), two packs per writer, two writers per lane, at most
``service.max_pending`` changes per lane (then the intake stops taking
from the source) and ``Lane.max_active`` commits per lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from replicator._native import ChunkerParams
from replicator.config import FS_SMALL_IN_FLIGHT, ServiceSettings
from replicator.errors import SupersededError
from replicator.events import ChangeEvent
from replicator.origins import ObjectReader, ObjectVersion
from replicator.pipeline.lane_commits import LaneCommits
from replicator.pipeline.lanes import Lane
from replicator.pipeline.ship import BEHIND_SECONDS, previous_chunks, read_window, ship
from replicator.pipeline.small import (
    BATCH_BYTES,
    BATCH_OBJECTS,
    SMALL_OBJECT,
    BatchOrigin,
    ship_many,
)
from replicator.pipeline.tracking import Job, Meter, Observer, Route, Track, same_event
from replicator.sources import Source
from replicator.store.subtrees import SubtreeCache

#: At the end of a drain, how long the source's ``done`` calls may take.
REPORT_WAIT_SECONDS = 10.0

#: Once a run's source has nothing more to hand out, a commit waits at most
#: this long for its pack to seal (``finish_up``).
FINISH_SEAL_SECONDS = 0.05

#: Opens the bytes of exactly one event's version (SupersededError if gone).
Opener = Callable[[ChangeEvent], Awaitable[ObjectReader]]


class Service(LaneCommits):
    """Runs until :meth:`drain`; the owner opens and closes source and lanes.

    ``route`` names the lanes each event from the source is pending at (a
    listing's events: the peers that lack the version); every lane when it
    is not given. ``observer`` hears each lane's outcome. With a
    ``batch_reader`` (an origin's ``read_many``), a worker takes up to
    ``small.BATCH_OBJECTS`` small versions wanted by the same lanes at once,
    reads them in one call and places them together (``small.ship_many``)."""

    def __init__(
        self,
        source: Source,
        opener: Opener,
        lanes: Sequence[Lane],
        telemetry: Meter,
        settings: ServiceSettings,
        *,
        params: ChunkerParams,
        window_size: int,
        etag_is_digest: bool,
        behind_seconds: float = BEHIND_SECONDS,
        route: Route | None = None,
        observer: Observer | None = None,
        batch_reader: BatchOrigin | None = None,
        subtrees: SubtreeCache | None = None,
    ) -> None:
        self.batch_reader = batch_reader
        self.subtrees = subtrees
        self.finishing = False
        self._finished: set[str] = set()  # lanes ``finish_up`` has sealed
        self.source = source
        self.route = route
        self.observer = observer or Observer()
        self.opener = opener
        self.lanes = list(lanes)
        self.telemetry = telemetry
        self.settings = settings
        self.params = params
        self.window_size = window_size
        self.etag_is_digest = etag_is_digest
        #: A lane whose last pack took longer than this to write, and whose
        #: writer would wait, is left out of a read shared with other lanes.
        self.behind_seconds = behind_seconds
        self._start_tracking()
        self._start_commits()
        self._intake: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._turn = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._intake = asyncio.create_task(self._take_all())
        self._workers = [
            asyncio.create_task(self._worker(large=False))
            for _ in range(self.settings.max_in_flight or FS_SMALL_IN_FLIGHT)
        ] + [
            asyncio.create_task(self._worker(large=True))
            for _ in range(self.settings.max_large_in_flight)
        ]

    async def intake_done(self) -> None:
        """Until the source's events end (a listing: every event it yielded is done)."""
        assert self._intake is not None, "not started"
        await asyncio.shield(self._intake)

    def finish_up(self) -> None:
        """No more events will come but those under way (a listing ended).
        Once a lane also has nothing more wanted, nothing else would fill
        its open pack: it seals now, and from then on within
        ``FINISH_SEAL_SECONDS`` of a commit waiting on one. (A listing ends
        up to ``max_pending`` versions ahead of the lanes: sealing at once
        cut the packs of all those into pieces of one batch each.)"""
        self.finishing = True
        self._finish_idle()

    def _finish_idle(self) -> None:
        """``finish_up``'s seals at each lane that wants nothing more."""
        for lane in self.lanes:
            if not lane.want and lane.name not in self._finished:
                self._finished.add(lane.name)
                lane.seals.max_delay = FINISH_SEAL_SECONDS
                self._spawn(lane.seals.flush_all())

    def held(self) -> int:
        """Changes pending or active at any lane."""
        return sum(lane.held for lane in self.lanes)

    async def drain(self, seconds: float) -> bool:
        """Stop taking changes; finish what was taken within ``seconds``.
        True when nothing was left; the workers are stopped either way."""
        if self._intake is not None:
            self._intake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._intake
        deadline = time.monotonic() + seconds
        while self.held() and time.monotonic() < deadline:
            await asyncio.gather(*(lane.flush() for lane in self.lanes))
            await asyncio.sleep(0.05)
        drained = not self.held()
        for task in [*self._workers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._workers, *self._tasks, return_exceptions=True)
        if self._reports:
            # The source hears of every durable event (a Kafka source commits
            # its offsets from these); they are quick, so they are awaited.
            await asyncio.wait(set(self._reports), timeout=REPORT_WAIT_SECONDS)
        return drained

    # ------------------------------------------------------------ intake

    async def _take_all(self) -> None:
        events = aiter(self.source.events())
        while True:
            # Backpressure before asking for the next event: what the source
            # has not handed out it keeps, coalesces and counts in its backlog.
            while any(lane.held >= self.settings.max_pending for lane in self.lanes):
                self._room.clear()
                await self._room.wait()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            self.take(event, None if self.route is None else self.route(event))

    def take(self, event: ChangeEvent, lanes: Collection[str] | None = None) -> None:
        """Make ``event`` pending at the ``lanes`` named (default: every lane),
        replacing older versions not started. At no lane, it is done at once."""
        track = self._tracks.get(event)
        if track is not None:
            track.copies += 1
            return
        at = [lane for lane in self.lanes if lanes is None or lane.name in lanes]
        self._tracks[event] = track = Track({lane.name for lane in at})
        if not at:
            self._done(event, track)
        for lane in at:
            if lane.down is not None:  # down for the run: nothing more is sent to it
                self.telemetry.pending(lane.name, event, event.size)
                self._not_sent(lane, event)
                continue
            active = lane.active.get(event.key)
            if active is not None and active.event_time_ns == event.event_time_ns:
                # Two states with one event time: the first was seen mid-write
                # (a write sets the ctime before its bytes land). Its manifest
                # would tie with this one's, so it is not written.
                self._torn.setdefault(active, set()).add(lane.name)
            old = lane.want.get(event.key)
            self.telemetry.pending(lane.name, event, event.size)
            if old is not None and old.order_key() > event.order_key():
                # Arrived late (Kafka reorders and repeats): the newer version
                # waiting here replaces it, never the other way round.
                self._finish(lane, event, superseded=True)
                continue
            lane.want[event.key] = event  # an existing key keeps its place in line
            if old is not None:
                self._finish(lane, old, superseded=True)
        self._work.set()

    # ------------------------------------------------------------ scheduling

    async def _worker(self, *, large: bool) -> None:
        while True:
            job = self._next_job(large)
            if job is None:
                await self._wait_for_work()
            elif not large and self.batch_reader is not None and _batchable(job.event):
                await self._run_batch([job, *self._more_like(job)])
            else:
                await self._run_safely(job)

    async def _run_safely(self, job: Job) -> None:
        try:
            await self._run(job)
        except Exception as exc:  # one bad job must not stop a worker
            self.observer.failed(None, job.event, exc)
            for lane in job.lanes:
                self._finish(lane, job.event, failed=True)

    def _next_job(self, large: bool) -> Job | None:
        """The oldest version of the worker's size class some lane may start."""
        now = time.monotonic()
        n = len(self.lanes)
        self._turn = (self._turn + 1) % n
        for lane in self.lanes[self._turn :] + self.lanes[: self._turn]:
            if not lane.available(now):
                continue
            for key, event in lane.want.items(large):
                if key not in lane.active:
                    return self._claim(key, event, large, self._wanting(key, event, now))
        return None

    def _claim(self, key: str, event: ChangeEvent, large: bool, lanes: list[Lane]) -> Job:
        """``lanes`` (``_wanting``: those that want exactly this version) join the job."""
        job = Job(key, event, large)
        for lane in lanes:
            del lane.want[key]
            lane.active[key] = event
            job.lanes.append(lane)
        return job

    def _wanting(self, key: str, event: ChangeEvent, now: float) -> list[Lane]:
        """The available lanes that want exactly this version, not started."""
        return [
            lane
            for lane in self.lanes
            if lane.available(now)
            and key not in lane.active
            and same_event(lane.want.get(key), event)
        ]

    async def _wait_for_work(self) -> None:
        if self.finishing:
            self._finish_idle()
        self._work.clear()
        now = time.monotonic()
        waits = [lane.retry_at - now for lane in self.lanes if lane.want and lane.retry_at > now]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), min(waits, default=None))

    # ------------------------------------------------------------ small batches

    def _more_like(self, job: Job) -> list[Job]:
        """More small versions wanted by exactly the lanes of ``job``, claimed
        for one batch (bounded in count and bytes)."""
        names = {lane.name for lane in job.lanes}
        size, now = job.event.size, time.monotonic()
        out: list[Job] = []
        first = job.lanes[0]
        seen = itertools.islice(first.want.items(False), 4 * BATCH_OBJECTS)
        for key, event in list(seen):
            if len(out) + 1 >= BATCH_OBJECTS or size >= BATCH_BYTES:
                break
            if key in first.active or not _batchable(event):
                continue
            # The lanes found once, and claimed as found (the same answer a
            # second look gives: nothing ran in between).
            lanes = self._wanting(key, event, now)
            if len(lanes) == len(names) and all(lane.name in names for lane in lanes):
                out.append(self._claim(key, event, False, lanes))
                size += event.size
        return out

    async def _run_batch(self, jobs: list[Job]) -> None:
        """Read a batch whole; what the origin cannot vouch for goes alone."""
        assert self.batch_reader is not None
        try:
            datas = await self.batch_reader.read_many([version_of(j.event) for j in jobs])
        except Exception:  # e.g. the thread pool is gone: each version alone
            datas = [None] * len(jobs)
        whole = [(j, d) for j, d in zip(jobs, datas, strict=True) if d is not None]
        if whole:
            try:
                await self._ship_batch([j for j, _ in whole], [d for _, d in whole])
            except Exception as exc:  # as one version's failure, for each
                for job, _ in whole:
                    self.observer.failed(None, job.event, exc)
                    for lane in job.lanes:
                        self._finish(lane, job.event, failed=True)
        for job, data in zip(jobs, datas, strict=True):
            if data is None:
                await self._run_safely(job)

    async def _ship_batch(self, jobs: list[Job], datas: list[bytes]) -> None:
        lanes = jobs[0].lanes
        shipped = await ship_many(datas, self.params, [lane.pack_writer(False) for lane in lanes])
        events = [job.event for job in jobs]
        self.telemetry.source_bytes(sum(shipped.sizes))
        for event, size in zip(events, shipped.sizes, strict=True):
            self.observer.read(event, size)
        for lane in lanes:
            # The same lanes failed for every version of the batch.
            if (exc := shipped.failures.get(lane.name)) is not None:
                for event in events:
                    self._lane_failed(lane, event, exc, "put")
            else:
                self._spawn(self._commit_batch(lane, events, shipped))

    # ------------------------------------------------------------ jobs

    async def _run(self, job: Job) -> None:
        if job.event.removed:
            await asyncio.gather(*(self._tombstone(lane, job.event) for lane in job.lanes))
            return
        # One read, each lane's writer of the object's size class; a lane
        # whose writer fails drops out, one that is behind is left out (it
        # reads the version again alone), the others go on.
        writers = [lane.pack_writer(job.large) for lane in job.lanes]
        window = read_window(job.event.size, self.window_size)
        try:
            stores = [lane.backend for lane in job.lanes]
            previous = await previous_chunks(stores, job.event, window, self.params, self.subtrees)
            reader = await self.opener(job.event)
            try:
                fan = await ship(
                    reader,
                    self.params,
                    window,
                    writers,
                    may_defer=len(writers) > 1,
                    behind_seconds=self.behind_seconds,
                    previous=previous,
                    subtrees=self.subtrees,
                )
            finally:
                await reader.close()
        except SupersededError:
            for lane in job.lanes:
                self._finish(lane, job.event, superseded=True)
            return
        self.telemetry.source_bytes(fan.size)
        self.observer.read(job.event, fan.size)
        for lane in job.lanes:
            if lane.name in fan.failures:
                self._lane_failed(lane, job.event, fan.failures[lane.name], "put")
            elif lane.name in fan.behind:
                self.observer.behind(lane.name, job.event)
                self._behind(lane, job.event)
            elif fan.complete:
                self._spawn(self._commit(lane, job.event, fan, large=job.large))


def _batchable(event: ChangeEvent) -> bool:
    return not event.removed and event.size <= SMALL_OBJECT


def version_of(event: ChangeEvent) -> ObjectVersion:
    """The version an origin reads for ``event`` (with the file identity it
    is pinned to, when the event has one)."""
    e = event
    return ObjectVersion(e.key, e.size, e.event_time_ns, e.version_id, e.etag, e.mtime_ns, e.inode)
