"""The metric families whose value is only true at the moment of the scrape.

RPO, pending work and Kafka lag are computed from :class:`Telemetry`'s state
when Prometheus asks; so are readiness and, for a source that holds a
connection (Kafka), whether it is connected and how often it reconnected:
those are polled from the source rather than pushed, so a gauge can never
be left stale by a transition nobody reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from replicator.metrics import Telemetry


@dataclass(frozen=True)
class SourceLink:
    """A connected source's state, read at every scrape, ``/readyz`` and ``/status``."""

    #: None while the source can take changes, else why not (one line).
    problem: Callable[[], str | None]
    #: Kafka consumers replaced so far (sources/kafka_reconnect.py).
    reconnects: Callable[[], int]


def _per_peer(telemetry: Telemetry) -> Iterator[Metric]:
    rpo = GaugeMetricFamily(
        "replicator_rpo_seconds",
        "Age of the oldest change not yet durable at the peer (0 when none).",
        labels=["destination"],
    )
    events = GaugeMetricFamily(
        "replicator_pending_events",
        "Changes not yet durable at the peer, source backlog included.",
        labels=["destination"],
    )
    nbytes = GaugeMetricFamily(
        "replicator_pending_bytes",
        "Object bytes of the changes in the pipeline for the peer.",
        labels=["destination"],
    )
    for name, (r, n, b) in telemetry.peer_view().items():
        rpo.add_metric([name], r)
        events.add_metric([name], n)
        nbytes.add_metric([name], b)
    yield from (rpo, events, nbytes)


def _source(telemetry: Telemetry) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "replicator_kafka_consumer_lag",
        "Records between the consumer's position and the log end.",
        labels=["topic", "partition"],
    )
    for (topic, partition), behind in sorted(telemetry.consumer_lag().items()):
        lag.add_metric([topic, str(partition)], behind)
    yield lag
    link = telemetry.source_link
    if link is None:  # a directory source holds no connection
        return
    yield GaugeMetricFamily(
        "replicator_source_connected",
        "1 while the source can take changes (Kafka: a consumer whose group coordinator answers).",
        value=0 if link.problem() else 1,
    )
    yield CounterMetricFamily(
        "replicator_kafka_reconnects",
        "Kafka consumers replaced after the group coordinator was lost.",
        value=link.reconnects(),
    )


class ScrapeCollector(Collector):
    """Registered once per Telemetry; computes its families at every collect()."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Metric]:
        yield from _per_peer(self._t)
        yield from _source(self._t)
        yield GaugeMetricFamily(
            "replicator_ready",
            "1 once start-up checks passed, every peer is up and the source is connected.",
            value=1 if self._t.ready()[0] else 0,
        )
        yield from self._t.heartbeat.families()
