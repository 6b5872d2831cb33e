"""``verify --against-source``: does a peer's latest state equal the source's?

Walks the source listing and the peer's newest manifest of every key as two
sorted streams (``pipeline.compare``: bounded memory) and reports, per key,
each way the peer would restore something other than what the source holds:

- ``missing``: the source has the key, the peer has no manifest for it, or
  its newest manifest is a tombstone (a deleted manifest file shows here);
- ``stale``: the peer's newest version is not the source's current one
  (older, or another version at the same time);
- ``not-removed``: the peer's newest version is live, but the source no
  longer has the key and no tombstone records that.

The daemon's start-up reconcile walks the same pairs (``judge``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replicator.errors import IntegrityError
from replicator.origins import ObjectVersion, Origin
from replicator.pipeline.compare import Pair, compare, peer_keys
from replicator.pipeline.reconcile import read_entry, same_version
from replicator.store.backend import Backend
from replicator.store.format import Manifest
from replicator.store.manifest_store import entry_of_ref


@dataclass(frozen=True, slots=True)
class SourceFinding:
    key: str
    kind: str  # "missing", "stale", "not-removed", "unreadable", "unreadable-source"
    message: str
    version: str = ""  # the peer's newest version name, where there is one

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "kind": self.kind,
            "message": self.message,
            "version": self.version,
        }


@dataclass
class SourceReport:
    listed: int = 0  # objects the source listed
    peer_keys: int = 0  # keys with manifests at the peer
    in_sync: int = 0
    findings: list[SourceFinding] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "peer_keys": self.peer_keys,
            "in_sync": self.in_sync,
            "findings": [f.to_json() for f in self.findings],
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


async def verify_against_source(
    origin: Origin,
    backend: Backend,
    prefix: str = "",
    on_finding: Callable[[SourceFinding], None] | None = None,
) -> SourceReport:
    """Compare every key under ``prefix`` at the source and at the peer."""
    started = time.monotonic()
    report = SourceReport()
    peer = peer_keys(backend, origin.bucket, origin.key_prefix(prefix))
    async for pair in compare(origin.list(prefix), peer):
        report.listed += pair.source is not None
        report.peer_keys += pair.peer is not None
        # The walk has passed the key already, so its directory is known by now.
        if pair.source is None and pair.key.startswith(tuple(p for p, _ in origin.unlisted)):
            continue
        finding = await judge(backend, origin, pair)
        if finding is None:
            report.in_sync += pair.source is not None
            continue
        report.findings.append(finding)
        if on_finding is not None:
            on_finding(finding)
    for where, reason in origin.unlisted:
        report.findings.append(
            SourceFinding(where, "unreadable-source", f"source directory cannot be read: {reason}")
        )
        if on_finding is not None:
            on_finding(report.findings[-1])
    report.elapsed_seconds = time.monotonic() - started
    return report


async def judge(backend: Backend, origin: Origin, pair: Pair) -> SourceFinding | None:
    """What is wrong with one key at the peer, or None when it is in sync."""
    key = pair.key
    if pair.peer is None:
        return SourceFinding(key, "missing", "in the source, no manifest at the peer")
    entry = entry_of_ref(pair.peer)
    version = entry.version_name
    try:
        newest = await read_entry(backend, entry)
    except IntegrityError as exc:
        return SourceFinding(key, "unreadable", f"newest manifest unreadable: {exc}", version)
    if newest is None:
        return SourceFinding(key, "missing", "newest manifest vanished while checked", version)
    why = _difference(origin, pair.source, newest)
    return None if why is None else SourceFinding(key, why[0], why[1], version)


def _difference(
    origin: Origin, src: ObjectVersion | None, newest: Manifest
) -> tuple[str, str] | None:
    if src is None:
        if newest.removed:
            return None
        return "not-removed", "removed at the source, live at the peer (no tombstone)"
    if newest.removed:
        return "missing", "in the source, a tombstone at the peer"
    if same_version(newest, origin, src):
        return None
    held = newest.identity.event_time_ns
    how = "older than" if held < src.event_time_ns else "not"
    return "stale", (
        f"the peer's newest version (event time {held} ns) is {how} the source's "
        f"current one (event time {src.event_time_ns} ns, size {src.size})"
    )
