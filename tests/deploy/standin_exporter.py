"""A real HTTP exporter standing in for the daemon's /metrics until
``replicator run`` lands: every family of deploy/metrics.txt, served by
prometheus_client on 127.0.0.1, with values a test can change while
Prometheus scrapes it. When the daemon is merged, the live tests swap this
for the daemon itself (its metrics are checked against the same list).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tests.deploy.metric_names import Family, families

#: The label values each series gets (low-cardinality, like the daemon's).
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "destination": ("dr-eu", "dr-us"),
    "source": ("kafka",),
    "outcome": ("durable", "superseded", "dead_letter"),
    "operation": ("put",),
    "error": ("TransientStoreError",),
    "topic": ("s3-events",),
    "partition": ("0", "1"),
    "version": ("0.1.0",),
    "python": ("3.11",),
}
BUCKETS = (0.5, 1.0, 5.0, 30.0, 300.0)


class StandinExporter(Collector):
    """Serves every listed family; ``set`` overrides one series' value."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self._lock = threading.Lock()
        self._scrapes = 0
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self._server: Any = server
        self.port: int = server.server_port
        self.address = f"127.0.0.1:{self.port}"

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, frozenset(labels.items()))] = value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._scrapes += 1
            for family in families():
                yield self._family(family)

    def _value(self, family: Family, labels: dict[str, str], default: float) -> float:
        return self._values.get((family.name, frozenset(labels.items())), default)

    def _family(self, family: Family) -> Metric:
        # Counters grow with every scrape, so rate() and increase() have data.
        grow = float(self._scrapes)
        combos = itertools.product(*(LABEL_VALUES[label] for label in family.labels))
        if family.type == "histogram":
            hist = HistogramMetricFamily(family.name, "stand-in", labels=family.labels)
            for combo in combos:
                buckets = [(str(b), grow * (i + 1)) for i, b in enumerate(BUCKETS)]
                buckets.append(("+Inf", grow * (len(BUCKETS) + 1)))
                hist.add_metric(list(combo), buckets, sum_value=grow * 42.0)
            return hist
        base = family.name.removesuffix("_total")
        metric: Any = (
            CounterMetricFamily(base, "stand-in", labels=family.labels)
            if family.type == "counter"
            else GaugeMetricFamily(base, "stand-in", labels=family.labels)
        )
        for combo in combos:
            labels = dict(zip(family.labels, combo, strict=True))
            default = grow if family.type == "counter" else 1.0
            metric.add_metric(list(combo), self._value(family, labels, default))
        return metric  # type: ignore[no-any-return]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
