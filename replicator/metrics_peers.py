"""Per-peer telemetry state and its JSON view (``replicator status``).

Kept apart from :mod:`replicator.metrics`, which owns the facts reported by
the pipeline: this module is what one destination remembers between scrapes
(pending changes, counts, recent latencies) and how it is shown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from replicator.metrics_pending import PendingSet

#: Latencies kept per peer for the quantiles of ``snapshot`` (a bounded window).
RECENT_LATENCIES = 4096


class PeerState:
    """Per-destination state that the scrape-time collector reads."""

    def __init__(self, target: float | None) -> None:
        self.pending = PendingSet()
        self.target = target
        self.up = False
        self.durable_events = 0
        self.shipped = 0
        self.deduplicated = 0
        self.errors = 0
        self.last_durable_ns: int | None = None
        self.latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def peer_json(peer: PeerState, rpo: float, events: int, nbytes: int) -> dict[str, Any]:
    recent = sorted(peer.latencies)
    return {
        "rpo_seconds": round(rpo, 3),
        "rpo_target_seconds": peer.target,
        "over_target": peer.target is not None and rpo > peer.target,
        "pending_events": events,
        "pending_bytes": nbytes,
        "last_durable_event_time": seconds(peer.last_durable_ns),
        "durable_events": peer.durable_events,
        "shipped_bytes": peer.shipped,
        "deduplicated_bytes": peer.deduplicated,
        "errors": peer.errors,
        "up": peer.up,
        "latency_seconds": {
            "count": len(recent),
            "p50": round(quantile(recent, 0.50), 6),
            "p99": round(quantile(recent, 0.99), 6),
            "max": round(recent[-1], 6) if recent else 0.0,
        },
    }
