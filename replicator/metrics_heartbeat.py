"""The heartbeat canary's side of the daemon's metrics (see
:mod:`replicator.heartbeat`).

``replicator_heartbeat_age_seconds{destination}`` is computed when scraped:
now minus the event time (the storage system's clock, as for the RPO) of
the newest canary version durable at that peer. Until a peer holds any
canary, the age counts from the daemon's first beat, written and not yet
durable there: a canary that never arrives shows a growing age, not a
missing series that no alert can see. No sample at all before the first
beat (or with the heartbeat off).

``replicator_heartbeat_interval_seconds`` is the period in force: 0 when
the heartbeat is off or was disabled (the source refused the write). The
HeartbeatStale rule subtracts it, since the age of a healthy peer climbs to
one period before each new beat lands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from replicator.events import ChangeEvent


class HeartbeatAges:
    """Newest canary durable per peer; thread-safe."""

    def __init__(self, destinations: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._interval = 0.0
        self._first_beat_ns: int | None = None
        self._newest: dict[str, int | None] = dict.fromkeys(destinations)

    def enable(self, key: str, interval: float) -> None:
        """Watch durable events for ``key``, a beat every ``interval`` s."""
        with self._lock:
            self._key, self._interval = key, interval

    def disable(self) -> None:
        """The source refused the beat: the period in force is 0."""
        with self._lock:
            self._interval = 0.0

    def beaten(self, written_ns: int) -> None:
        """A beat was written into the source at ``written_ns``."""
        with self._lock:
            if self._first_beat_ns is None:
                self._first_beat_ns = written_ns

    def seen(self, destination: str, event_time_ns: int) -> None:
        """A canary with this event time is durable at ``destination``."""
        with self._lock:
            newest = self._newest[destination]
            if newest is None or event_time_ns > newest:
                self._newest[destination] = event_time_ns

    def durable(self, destination: str, event: ChangeEvent) -> None:
        """Called for every durable event; only the canary's count."""
        if self._key is not None and event.key == self._key and not event.removed:
            self.seen(destination, event.event_time_ns)

    def ages(self, now_ns: int | None = None) -> dict[str, float]:
        """Seconds per peer; peers with nothing to measure from are absent."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        out = {}
        with self._lock:
            for name, newest in self._newest.items():
                since = newest if newest is not None else self._first_beat_ns
                if since is not None:
                    out[name] = max(0.0, (now_ns - since) / 1e9)
        return out

    def families(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "replicator_heartbeat_age_seconds",
            "Age of the newest heartbeat canary durable at the peer (end to end).",
            labels=["destination"],
        )
        for name, seconds in self.ages().items():
            age.add_metric([name], seconds)
        yield age
        yield GaugeMetricFamily(
            "replicator_heartbeat_interval_seconds",
            "Period of the heartbeat canary in force (0: off or disabled).",
            value=self._interval,
        )


__all__ = ["HeartbeatAges"]
