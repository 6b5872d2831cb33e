"""The figures of ``bench e2e``, computed from the bench's own write log and
the daemon's log of durable versions (never from the daemon's own RPO).

Vocabulary: a *write* is one object version the bench made visible (its
event time is the file's ctime after the rename); it is *covered* at a peer
from the moment that version is durable there. The *true RPO* of a peer at
instant t is t minus the event time of the oldest write visible at t and
not yet covered at that peer, 0 when none: what the exported
``replicator_rpo_seconds`` claims to be.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from replicator.demo.daemon import Durable


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    size_class: str
    size: int
    event_time_ns: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of ``replicator_rpo_seconds``."""

    at_ns: int
    destination: str
    exported: float
    #: How long the scrape took: a busy event loop in the daemon shows here,
    #: and it bounds how precisely ``at_ns`` dates the value.
    took_seconds: float = 0.0


def quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "count": len(ordered),
        "p50": round(q(0.50), 6),
        "p99": round(q(0.99), 6),
        "max": round(ordered[-1], 6),
    }


def covered_at(durable: Iterable[Durable]) -> dict[tuple[str, str, int], int]:
    """(peer, key, event time) -> when that version was durable there (ns)."""
    out: dict[tuple[str, str, int], int] = {}
    for d in durable:
        k = (d.destination, d.key, d.event_time_ns)
        out[k] = min(out.get(k, d.durable_ns), d.durable_ns)
    return out


def latencies(
    writes: Sequence[Write], covered: dict[tuple[str, str, int], int], peers: Sequence[str]
) -> tuple[dict[str, dict[str, float]], int]:
    """Per size class: event -> durable at every peer; and writes never durable."""
    by_class: dict[str, list[float]] = {}
    missing = 0
    for w in writes:
        times = [covered.get((p, w.key, w.event_time_ns)) for p in peers]
        if any(t is None for t in times):
            missing += 1
            continue
        done = max(t for t in times if t is not None)
        by_class.setdefault(w.size_class, []).append((done - w.event_time_ns) / 1e9)
    return {c: quantiles(v) for c, v in sorted(by_class.items())}, missing


def true_rpo(
    writes: Sequence[Write], covered: dict[tuple[str, str, int], int], peer: str, at_ns: int
) -> float:
    oldest = math.inf
    for w in writes:
        if w.event_time_ns > at_ns or w.event_time_ns >= oldest:
            continue
        if covered.get((peer, w.key, w.event_time_ns), math.inf) > at_ns:
            oldest = w.event_time_ns
    return 0.0 if oldest == math.inf else (at_ns - oldest) / 1e9


def rpo_error(
    writes: Sequence[Write], covered: dict[tuple[str, str, int], int], samples: Sequence[Sample]
) -> dict[str, Any]:
    """|exported - true| per peer, and the largest under- and over-statement."""
    out: dict[str, Any] = {}
    for peer in sorted({s.destination for s in samples}):
        mine = [s for s in samples if s.destination == peer]
        truths = [true_rpo(writes, covered, peer, s.at_ns) for s in mine]
        errors = [s.exported - t for s, t in zip(mine, truths, strict=True)]
        worst = max(range(len(mine)), key=lambda i: abs(errors[i]))
        # The value was computed at some instant between asking and the
        # answer: the error against whichever end fits it better.
        either = [
            min(abs(e), abs(s.exported - true_rpo(writes, covered, peer, _asked(s))))
            for s, e in zip(mine, errors, strict=True)
        ]
        spread = quantiles(either)
        out[peer] = quantiles([abs(e) for e in errors]) | {
            "p99_either_end": spread["p99"],
            "max_either_end": spread["max"],
            "most_under": round(min(errors), 6),
            "most_over": round(max(errors), 6),
            # The sample behind "max": a long scrape (took) while the true
            # RPO fell at once (the last pending write durable) reads as a
            # large error, the value having been computed before the fall.
            "worst": {
                "exported": round(mine[worst].exported, 6),
                "true": round(truths[worst], 6),
                "true_when_asked": round(true_rpo(writes, covered, peer, _asked(mine[worst])), 6),
                "took_seconds": round(mine[worst].took_seconds, 6),
            },
        }
    return out


def _asked(sample: Sample) -> int:
    return sample.at_ns - int(sample.took_seconds * 1e9)


def throughput(writes: Sequence[Write], durable: Sequence[Durable]) -> dict[str, float]:
    """Objects/s and MB/s from the first write to the last durable version."""
    if not writes or not durable:
        return {"objects_per_second": 0.0, "mb_per_second": 0.0, "seconds": 0.0}
    start = min(w.event_time_ns for w in writes)
    end = max(d.durable_ns for d in durable)
    seconds = max(1e-9, (end - start) / 1e9)
    return {
        "objects_per_second": round(len(writes) / seconds, 3),
        "mb_per_second": round(sum(w.size for w in writes) / seconds / 1e6, 3),
        "seconds": round(seconds, 3),
    }
