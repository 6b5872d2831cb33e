"""Keeping the Kafka source connected: bounded commits, and a fresh consumer when the group is lost.

aiokafka 0.14 waits for its group coordinator without a deadline: ``commit()``
and ``committed()`` loop in ``ensure_coordinator_known`` under a lock shared
with the coordination task, and ``stop()`` awaits that task. After a broker
restart the coordinator was once never found again while fetching worked
(docs/run-kafka.md, "broker restart"): commits waited for ever and the stop
hung. Nothing inside the consumer recovers from that, so the source watches
the coordinator itself:

- every call that needs the coordinator (a commit, a committed-offset probe),
  the log-end refresh and every ``stop()`` is bounded;
- the coordinator is *healthy* while such a call succeeds; when it has not
  answered for ``lost_after`` seconds (commits timing out or failing, probes
  too), a fresh consumer is started; if it reaches the brokers, the old one
  is torn down and the fresh one joins the group; if not (a plain outage,
  which the old one may yet ride out), the old one is kept and the attempt
  repeated with a backoff.

The rebuild is a revocation of every partition: events in flight are dropped
(never acknowledged), nothing is committed past them, and the new member
starts each partition at the group's committed offset, so they are read again.
Duplicates are harmless (content addressing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from replicator.config import KafkaSettings
from replicator.sources.kafka_backlog import BacklogClock
from replicator.sources.kafka_clients import make_consumer
from replicator.sources.watermark import Watermarks

log = logging.getLogger("replicator.sources.kafka")

#: The least time a coordinator call (commit, offset fetch) may take before it
#: counts as failed; the session timeout raises it.
CALL_TIMEOUT_S = 5.0
#: Bound on a client's stop(); past it the client is abandoned.
STOP_TIMEOUT_S = 10.0
#: Backoff between attempts to start a fresh consumer while the brokers are away.
REBUILD_BACKOFF_S = (1.0, 10.0)


class CoordinatorHealth:
    """When the group coordinator last answered, and when it counts as lost.

    A call is bounded by ``call_timeout`` (the session timeout, at least
    CALL_TIMEOUT_S). The coordinator is probed once it has been silent for a
    call timeout, and lost once silent for three session timeouts (at least
    15 s): long enough for a broker restart with a healthy consumer to
    rediscover it on its own, short enough that a stuck one is replaced
    before commits fall far behind."""

    def __init__(self, settings: KafkaSettings):
        session = settings.session_timeout_ms / 1000
        self.call_timeout = max(CALL_TIMEOUT_S, session)
        self.lost_after = max(15.0, 3 * session)
        self._ok_at = time.monotonic()
        self._backoff = REBUILD_BACKOFF_S[0]
        self._next_rebuild = 0.0
        self._failing = False

    def ok(self) -> None:
        self._ok_at = time.monotonic()
        self._backoff = REBUILD_BACKOFF_S[0]
        self._failing = False

    def failed(self) -> None:
        """A coordinator call (commit, probe) failed or went unanswered for a call timeout."""
        self._failing = True

    def problem(self) -> str | None:
        """Why the coordinator is not working (readiness), None while its last call succeeded.

        One failed call is enough: each is bounded by a call timeout, so it
        means the coordinator did not answer for that long."""
        if not self._failing:
            return None
        return f"kafka group coordinator not answering for {self.silent_for():.0f} s"

    def may_rebuild(self) -> bool:
        """Lost, and not within the backoff after a failed rebuild."""
        return self.lost() and time.monotonic() >= self._next_rebuild

    def rebuild_failed(self) -> float:
        """The brokers were not reachable: wait before the next try; returns the wait."""
        wait = self._backoff
        self._next_rebuild = time.monotonic() + wait
        self._backoff = min(wait * 2, REBUILD_BACKOFF_S[1])
        return wait

    def silent_for(self) -> float:
        return time.monotonic() - self._ok_at

    def needs_probe(self) -> bool:
        return self.silent_for() >= self.call_timeout

    def lost(self) -> bool:
        return self.silent_for() >= self.lost_after


async def probe_coordinator(
    consumer: AIOKafkaConsumer, settings: KafkaSettings, bound_s: float
) -> bool:
    """One committed-offset fetch (an OffsetFetch to the coordinator), bounded.

    Any partition of the subscribed topics will do: the answer is not used,
    only that the coordinator gave one."""
    assigned = sorted(consumer.assignment())
    tp = assigned[0] if assigned else TopicPartition(settings.topics[0], 0)
    try:
        await asyncio.wait_for(consumer.committed(tp), bound_s)
    except (TimeoutError, KafkaError) as exc:
        log.info("kafka source: group coordinator did not answer (%s)", type(exc).__name__)
        return False
    return True


async def stop_bounded(consumer: AIOKafkaConsumer | AIOKafkaProducer | None) -> None:
    """Stop a client; one whose coordinator task hangs is abandoned after STOP_TIMEOUT_S.

    Never raises (but for a cancellation): a client that cannot be stopped
    cleanly must not take the source with it. Cancelling ``stop()`` cancels
    the coordination task it awaits but not the heartbeat task, which would
    then spin for ever on a closed client; so the coordinator's leftover
    tasks are cancelled, and the fetcher and the client (sockets, metadata
    task) closed directly, as ``stop()`` would have done after the
    coordinator. Under uvloop, closing a connection whose transport is
    already closed raises RuntimeError ("the handler is closed"): logged and
    dropped, the client is gone either way."""
    if consumer is None:
        return
    try:
        await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
        return
    except KafkaError:
        return
    except TimeoutError:
        log.warning("kafka source: client stop timed out after %.0f s; abandoning it",
                    STOP_TIMEOUT_S)  # fmt: skip
    except Exception as exc:  # contained by design: see the docstring
        log.warning("kafka source: client stop failed (%s: %s); abandoning it",
                    type(exc).__name__, exc)  # fmt: skip
    await _abandon(consumer)


_COORDINATOR_TASKS = ("_heartbeat_task", "_commit_refresh_task", "_coordination_task")


async def _abandon(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """What stop() closes after the coordinator (aiokafka 0.14 internals), each bounded."""
    coordinator = getattr(client, "_coordinator", None)
    fetcher = getattr(client, "_fetcher", None)
    tasks = [getattr(coordinator, name, None) for name in _COORDINATOR_TASKS]
    # The fetch task too: should the fetcher's close fail, it would reconnect
    # through the closed client for ever.
    for task in (*tasks, getattr(fetcher, "_fetch_task", None)):
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
    for part in (fetcher, getattr(client, "_client", None)):
        if part is None:
            continue
        try:
            await asyncio.wait_for(part.close(), STOP_TIMEOUT_S)
        except Exception as exc:  # contained: see stop_bounded
            log.warning("kafka source: closing an abandoned client's %s failed (%s: %s)",
                        type(part).__name__, type(exc).__name__, exc)  # fmt: skip


async def start_consumer(consumer: AIOKafkaConsumer, bound_s: float) -> None:
    """start() bounded; on failure the half-started consumer is stopped, the error raised."""
    try:
        await asyncio.wait_for(consumer.start(), bound_s)
    except BaseException:
        await stop_bounded(consumer)
        raise


class Reconnecting:
    """The rebuild; the state is the KafkaSource's own (a mixin, like GroupMember)."""

    settings: KafkaSettings
    reconnects: int
    dropped_on_revoke: int
    _consumer: AIOKafkaConsumer | None
    _health: CoordinatorHealth
    _fetch_lock: asyncio.Lock
    _closing: asyncio.Event
    _room: asyncio.Event
    _marks: Watermarks
    _clock: BacklogClock
    _buffer: deque[Any]
    _unready: set[TopicPartition]

    def _subscribe(self, consumer: AIOKafkaConsumer) -> None:
        raise NotImplementedError

    def connection_problem(self) -> str | None:
        """Why the source cannot take changes now (``/readyz``), None while it can.

        Not connected: no consumer (before start, during a replacement), or
        the group coordinator's last bounded call failed; connected again at
        the next call it answers, or once a fresh consumer reached the brokers."""
        if self._closing.is_set():
            return None  # stopping: the daemon reports that itself
        if self._consumer is None:
            return "no kafka consumer (starting, or being replaced)"
        return self._health.problem()

    async def _keep_connected(self) -> None:
        """Probe a silent coordinator; replace the consumer once it is lost."""
        consumer = self._consumer
        if consumer is None or self._closing.is_set():
            return
        probe = self._health.needs_probe()
        if probe:
            if await probe_coordinator(consumer, self.settings, self._health.call_timeout):
                self._health.ok()
            else:
                self._health.failed()
        if self._health.may_rebuild() and not self._closing.is_set():
            await self._rebuild(consumer)

    async def _rebuild(self, old: AIOKafkaConsumer) -> None:
        """Start a fresh consumer first: while the brokers are away (a plain outage)
        the old one is kept, as it may yet recover, and nothing is dropped."""
        silent = self._health.silent_for()
        fresh = make_consumer(self.settings)
        try:
            await start_consumer(fresh, self._health.call_timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            wait = self._health.rebuild_failed()
            log.warning("kafka source: group coordinator silent for %.0f s and the brokers "
                        "unreachable (%s); next try in %.0f s", silent, type(exc).__name__,
                        wait)  # fmt: skip
            return
        if self._closing.is_set() or old is not self._consumer:
            await stop_bounded(fresh)
            return
        log.warning("kafka source: group coordinator silent for %.0f s while the brokers "
                    "answer; replacing the consumer (partitions revoked, in-flight events "
                    "read again)", silent)  # fmt: skip
        async with self._fetch_lock:  # no getmany() on the old consumer from here on
            self._consumer = None
        self._drop_all()
        try:
            await stop_bounded(old)
        finally:  # whatever the old one did, the source goes on with the fresh one
            self.reconnects += 1
            self._subscribe(fresh)
        log.warning("kafka source: consumer replaced (reconnect %d); rejoining group %s",
                    self.reconnects, self.settings.group_id)  # fmt: skip

    def _drop_all(self) -> None:
        """Every partition revoked, as in a rebalance, except that nothing can be
        committed (no coordinator): the group keeps its last committed offsets and
        the new member reads from there, in-flight events included."""
        dropped = 0
        for tp in self._marks.partitions():
            dropped += self._marks.revoke(tp)
            self._clock.forget(tp)
        self._buffer.clear()
        self._unready.clear()
        self.dropped_on_revoke += dropped
        self._room.set()
        log.info("kafka source: consumer dropped, %d events in flight dropped", dropped)
