"""What a backfill did, in figures, and how it reports progress."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Protocol

from replicator.records import record


class Progress(Protocol):
    """Told about each object as it is listed and as it is done."""

    def listed(self, objects: int, size: int) -> None: ...
    def done(self, outcome: str, size: int) -> None: ...


class NoProgress:
    def listed(self, objects: int, size: int) -> None:
        return None

    def done(self, outcome: str, size: int) -> None:
        return None


#: Outcomes of one object: replicated to every peer that lacked it,
#: unchanged (every peer held it), superseded (changed while read), error.
OUTCOMES = ("replicated", "unchanged", "superseded", "error")
#: Error messages kept in a summary (the rest are only counted).
MAX_ERROR_SAMPLES = 20


@record
class BackfillSummary:
    objects: int = 0  # listed at the source
    replicated: int = 0
    unchanged: int = 0
    superseded: int = 0
    errors: int = 0
    removed: int = 0  # tombstones written (one per peer and removed key)
    #: Per peer, tombstones the mass-deletion guard refused (none written).
    refused_removals: dict[str, int] = field(default_factory=dict)
    #: Peers marked down during the run (retries spent), and why.
    down: dict[str, str] = field(default_factory=dict)
    #: Per peer, objects not replicated to it because it was down.
    not_sent: dict[str, int] = field(default_factory=dict)
    #: Per peer, objects it was behind for when they were read, read again
    #: for it alone (the lanes' behind rule, pipeline/service.py).
    caught_up: dict[str, int] = field(default_factory=dict)
    source_bytes: int = 0  # bytes read from the source
    unchanged_bytes: int = 0  # not read: every peer already held the version
    shipped_bytes: dict[str, int] = field(default_factory=dict)
    deduplicated_bytes: dict[str, int] = field(default_factory=dict)
    stored_bytes: dict[str, int] = field(default_factory=dict)  # shipped, after compression
    put_requests: dict[str, int] = field(default_factory=dict)
    packs: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, int] = field(default_factory=dict)
    #: Per peer, what its start-up probe found.
    capabilities: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        setattr(self, _attr(outcome), getattr(self, _attr(outcome)) + 1)

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    def bump(self, table: dict[str, int], peer: str, n: int = 1) -> None:
        table[peer] = table.get(peer, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "replicated": self.replicated,
            "unchanged": self.unchanged,
            "superseded": self.superseded,
            "errors": self.errors,
            "removed": self.removed,
            "refused_removals": dict(self.refused_removals),
            "down": dict(self.down),
            "not_sent": dict(self.not_sent),
            "caught_up": dict(self.caught_up),
            "source_bytes": self.source_bytes,
            "unchanged_bytes": self.unchanged_bytes,
            "shipped_bytes": dict(self.shipped_bytes),
            "deduplicated_bytes": dict(self.deduplicated_bytes),
            "stored_bytes": dict(self.stored_bytes),
            "put_requests": dict(self.put_requests),
            "packs": dict(self.packs),
            "manifests": dict(self.manifests),
            "capabilities": dict(self.capabilities),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "error_samples": list(self.error_samples),
        }


def _attr(outcome: str) -> str:
    return "errors" if outcome == "error" else outcome
