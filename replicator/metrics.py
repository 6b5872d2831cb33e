"""Telemetry: every metric of the daemon, declared in one place, and its HTTP endpoint.

Vocabulary: a change is *pending* at a peer (destination) from the moment the
pipeline takes it until it is *durable* there (its manifest is stored) or
*settled* (it will not be replicated: superseded, coalesced into a newer
version). Changes a source knows of but has not handed out yet (its
*backlog*: Kafka records past the committed offset, files not yet stable)
count as pending at every peer.

The headline number, ``replicator_rpo_seconds{destination}``, is computed
when scraped: now minus the event time of the oldest change still pending at
that peer, 0 when none. The event time is the storage system's clock (S3
eventTime, file ctime), so the RPO is the data an operator would lose if the
source region died now.

One call here emits both the metric and the log line (Vector's internal-event
habit): callers report facts (``durable``, ``destination_error``) and never
log them again. Labels are low-cardinality (peer, source, operation, error
class); a key never becomes a label.

The HTTP side (``serve``) lives in :mod:`replicator.metrics_http`, the
families computed at scrape time in :mod:`replicator.metrics_scrape`, the
per-peer state in :mod:`replicator.metrics_peers`; callers import this module.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from replicator import __version__
from replicator.events import ChangeEvent
from replicator.metrics_heartbeat import HeartbeatAges
from replicator.metrics_http import MetricsServer, parse_address, serve
from replicator.metrics_peers import PeerState, min_opt, peer_json, seconds
from replicator.metrics_pending import PendingSet
from replicator.metrics_scrape import ScrapeCollector, SourceLink
from replicator.sources import Backlog

log = structlog.get_logger("replicator.metrics")

#: Event time → durable, in seconds: sub-second for small changes, minutes
#: for a peer that was down.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)


class Telemetry:
    """The daemon's metrics; thread-safe (a lock guards the pending sets).

    How the rooms report: the pipeline calls ``pending`` when it takes a
    change for a peer (before any wait, or the change is invisible to the
    RPO), then exactly one of ``durable`` / ``settled`` per peer;
    ``set_peer_up`` after each success or failure against a peer; the
    daemon ``set_ready`` after start-up checks and ``set_ready(False,
    "stopping")`` on drain; a source's ``backlog``, a Kafka source's lag
    map and its connection state are registered once (``set_source_backlog``,
    ``set_consumer_lag``, ``set_source_link``) and read at every scrape."""

    def __init__(
        self,
        destinations: Sequence[str],
        rpo_targets: Mapping[str, float],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        own_registry = registry is None
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._peers = {d: PeerState(rpo_targets.get(d)) for d in destinations}
        #: The heartbeat canary's ages (fed by replicator.heartbeat and ``durable``).
        self.heartbeat = HeartbeatAges(destinations)
        self._backlog: Callable[[], Backlog] = Backlog
        self._lag: Callable[[], Mapping[tuple[str, int], int]] = dict
        self.source_link: SourceLink | None = None
        self._ready = False
        self._reason = "starting"
        self._started = time.time()
        self._outcomes: dict[tuple[str, str], int] = {}
        self._source_bytes = 0
        #: Per format 3 peer: its unreadable segments, (name, why) (``set_damaged_segments``).
        self._damaged: dict[str, Callable[[], Sequence[tuple[str, str]]]] = {}
        self._declare(own_registry)

    def _declare(self, own_registry: bool) -> None:
        r = self.registry
        dest = ["destination"]
        self._latency = Histogram(
            "replicator_replication_latency_seconds",
            "Event time to durable at the peer.",
            dest,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._events = Counter(
            "replicator_events", "Changes by how they ended.", ["source", "outcome"], registry=r
        )
        self._read = Counter(
            "replicator_source_bytes_read", "Bytes read from the source.", registry=r
        )
        self._shipped = Counter(
            "replicator_shipped_bytes", "Pack bytes sent to the peer.", dest, registry=r
        )
        self._dedup = Counter(
            "replicator_deduplicated_bytes",
            "Object bytes the peer already held (not sent).",
            dest,
            registry=r,
        )
        self._errors = Counter(
            "replicator_destination_errors",
            "Failed peer operations, by operation and error class.",
            ["destination", "operation", "error"],
            registry=r,
        )
        self._gaps = Counter(
            "replicator_kafka_gaps",
            "Times records were lost to retention before being read (a reconcile follows).",
            ["topic", "partition"],
            registry=r,
        )
        self._last = Gauge(
            "replicator_last_durable_event_timestamp_seconds",
            "Event time of the newest change durable at the peer.",
            dest,
            registry=r,
        )
        self._target = Gauge(
            "replicator_rpo_target_seconds", "Configured RPO target.", dest, registry=r
        )
        self._up = Gauge(
            "replicator_destination_up", "1 when the peer answers, 0 otherwise.", dest, registry=r
        )
        build = Gauge(
            "replicator_build_info", "Build information.", ["version", "python"], registry=r
        )
        build.labels(__version__, platform.python_version()).set(1)
        for name, peer in self._peers.items():
            if peer.target is not None:
                self._target.labels(name).set(peer.target)
            self._up.labels(name).set(0)
            for counter in (self._shipped, self._dedup):
                counter.labels(name)
            self._latency.labels(name)
        r.register(ScrapeCollector(self))
        if own_registry:  # the default registry already has these
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

    def _peer(self, destination: str) -> PeerState:
        try:
            return self._peers[destination]
        except KeyError:
            raise KeyError(f"unknown destination {destination!r}") from None

    # -- facts reported by the pipeline and the sources -----------------

    def pending(self, destination: str, event: ChangeEvent, size: int) -> None:
        """The pipeline took ``event`` for ``destination`` (idempotent)."""
        peer = self._peer(destination)
        with self._lock:
            peer.pending.add(event, size)

    def durable(
        self,
        destination: str,
        event: ChangeEvent,
        *,
        shipped_bytes: int,
        deduplicated_bytes: int,
    ) -> None:
        """``event``'s manifest is stored at ``destination``."""
        peer = self._peer(destination)
        now_ns = time.time_ns()
        latency = max(0.0, (now_ns - event.event_time_ns) / 1e9)
        with self._lock:
            peer.pending.remove(event)
            peer.durable_events += 1
            peer.shipped += shipped_bytes
            peer.deduplicated += deduplicated_bytes
            peer.latencies.append(latency)
            if peer.last_durable_ns is None or event.event_time_ns > peer.last_durable_ns:
                peer.last_durable_ns = event.event_time_ns
                self._last.labels(destination).set(event.event_time_ns / 1e9)
        self._latency.labels(destination).observe(latency)
        self.heartbeat.durable(destination, event)
        self._shipped.labels(destination).inc(shipped_bytes)
        self._dedup.labels(destination).inc(deduplicated_bytes)
        log.info(
            "durable",
            destination=destination,
            key=event.key,
            version=event.version_id or event.etag or None,
            kind=str(event.kind),
            event_time_ns=event.event_time_ns,
            shipped_bytes=shipped_bytes,
            deduplicated_bytes=deduplicated_bytes,
            latency_seconds=round(latency, 6),
        )

    def settled(self, destination: str, event: ChangeEvent) -> None:
        """``event`` is no longer pending at ``destination`` and was not replicated."""
        peer = self._peer(destination)
        with self._lock:
            peer.pending.remove(event)

    def outcome(self, source: str, outcome: str) -> None:
        self._events.labels(source, outcome).inc()
        with self._lock:
            self._outcomes[(source, outcome)] = self._outcomes.get((source, outcome), 0) + 1

    def source_bytes(self, n: int) -> None:
        self._read.inc(n)
        with self._lock:
            self._source_bytes += n

    def destination_error(self, destination: str, operation: str, error: str) -> None:
        """A peer operation failed; ``error`` is a class name, never a message."""
        peer = self._peer(destination)
        with self._lock:
            peer.errors += 1
        self._errors.labels(destination, operation, error).inc()
        log.warning("destination error", destination=destination, operation=operation, error=error)

    def set_consumer_lag(self, fn: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        """``fn`` -> {(topic, partition): records behind the log end}, read at every scrape."""
        self._lag = fn

    def kafka_gap(self, topic: str, partition: int) -> None:
        """Records expired (retention, offset expiry) before the consumer read them."""
        self._gaps.labels(topic, str(partition)).inc()
        log.warning("kafka gap: records lost before read", topic=topic, partition=partition)

    def set_source_backlog(self, fn: Callable[[], Backlog]) -> None:
        """``fn`` is called at every scrape; its changes are pending at every peer."""
        self._backlog = fn

    def set_damaged_segments(
        self, destination: str, read: Callable[[], Sequence[tuple[str, str]]]
    ) -> None:
        """What names a peer's damaged segments, read at every ``/status``."""
        self._damaged[destination] = read

    def _damaged_json(self, destination: str) -> list[dict[str, str]]:
        read = self._damaged.get(destination)
        return [{"segment": n, "why": w} for n, w in (read() if read else ())]

    def set_source_link(self, link: SourceLink) -> None:
        """A source holding a connection (Kafka): polled by ``ready`` and every scrape."""
        self.source_link = link

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready, self._reason = ready, reason

    def set_peer_up(self, destination: str, up: bool) -> None:
        self._peer(destination).up = up
        self._up.labels(destination).set(1 if up else 0)

    # -- reading ---------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Start-up checks passed, every peer is up and the source connected; else why not."""
        if not self._ready:
            return False, self._reason or "start-up checks have not passed"
        reasons = []
        down = [name for name, peer in self._peers.items() if not peer.up]
        if down:
            reasons.append("peer down: " + ", ".join(down))
        problem = self.source_problem()
        if problem:
            reasons.append(f"source not connected: {problem}")
        return not reasons, "; ".join(reasons)

    def source_problem(self) -> str | None:
        """Why the source cannot take changes now; None when it can (or holds no connection)."""
        return None if self.source_link is None else self.source_link.problem()

    def consumer_lag(self) -> Mapping[tuple[str, int], int]:
        lag = self._lag()
        # Each partition read gets its gap counter at 0: increase() needs a
        # sample before the first gap, or that gap never shows on a graph.
        for topic, partition in lag:
            self._gaps.labels(topic, str(partition))
        return lag

    def peer_view(self, now_ns: int | None = None) -> dict[str, tuple[float, int, int]]:
        """Per peer: (rpo seconds, pending events, pending bytes), source backlog included."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        backlog = self._backlog()
        out = {}
        with self._lock:
            for name, peer in self._peers.items():
                oldest = min_opt(peer.pending.oldest_ns(), backlog.oldest_time_ns)
                rpo = 0.0 if oldest is None else max(0.0, (now_ns - oldest) / 1e9)
                out[name] = (rpo, len(peer.pending) + backlog.events, peer.pending.bytes)
        return out

    def _link_json(self) -> dict[str, Any]:
        link = self.source_link
        if link is None:
            return {}
        problem = link.problem()
        return {"connected": problem is None, "problem": problem, "reconnects": link.reconnects()}

    def snapshot(self) -> dict[str, Any]:
        """Everything ``replicator status`` and the demo show, JSON-ready."""
        view = self.peer_view()
        backlog = self._backlog()
        ready, reason = self.ready()
        with self._lock:
            peers = {
                name: peer_json(peer, *view[name]) | {"damaged_segments": self._damaged_json(name)}
                for name, peer in self._peers.items()
            }
            outcomes: dict[str, dict[str, int]] = {}
            for (name, outcome), n in sorted(self._outcomes.items()):
                outcomes.setdefault(name, {})[outcome] = n
            source = {
                "backlog_events": backlog.events,
                "oldest_backlog_time": seconds(backlog.oldest_time_ns),
                "bytes_read": self._source_bytes,
                "events": outcomes,
                **self._link_json(),
            }
        return {
            "version": __version__,
            "time": time.time(),
            "uptime_seconds": round(time.time() - self._started, 3),
            "ready": ready,
            "reason": reason,
            "source": source,
            "destinations": peers,
        }


__all__ = ["MetricsServer", "PendingSet", "SourceLink", "Telemetry", "parse_address", "serve"]
