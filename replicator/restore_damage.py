"""What a restore could not see: manifests in damaged format 3 segments.

A format 3 peer keeps the manifests of many keys in one segment; a segment
that cannot be read (its bytes no longer hash to its name, its header is
garbage) is left out of every listing (``SegmentStore.damaged``). A restore
must not then report "no manifests" for a key whose manifest is in it, nor
quietly restore an older version when the newest is in it. Per damaged
segment of the restored bucket:

- its header still reads (only its body is damaged): the (key, version) it
  lists are known. A selected key is a problem when a version the restore
  should have chosen (newest, or at or before ``--at``) is in it and no
  readable copy of that version, or of a newer one, was chosen instead.
- its header is unreadable: what it held is unknown, so any selected key
  may have lost a version to it: one problem naming the segment.

A store that keeps one object per manifest (formats 1 and 2) has no such
segments: nothing is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from replicator.store.reader import Problem
from replicator.store.versions import version_order


class Damaged(Protocol):
    """The shape of segment_store.DamagedSegment (read-only: it is frozen)."""

    @property
    def segment(self) -> str: ...
    @property
    def why(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def held(self) -> tuple[tuple[str, str], ...] | None: ...


async def damaged_segments(manifests: Any, bucket: str) -> Sequence[Damaged]:
    """The peer's unreadable segments of ``bucket`` (none for formats 1 and 2)."""
    damaged = getattr(manifests, "damaged", None)
    return await damaged(bucket) if callable(damaged) else []


@dataclass(slots=True)
class Unread:
    """The damaged segments of one restore's bucket, matched to its selection."""

    key_prefix: str
    exact: bool
    at_ns: int | None
    unknown: list[Damaged] = field(default_factory=list)
    #: key -> (newest wanted version name in a damaged segment, that segment)
    known: dict[str, tuple[str, Damaged]] = field(default_factory=dict)
    #: key -> the version the restore chose, for the keys in ``known``
    chosen: dict[str, str] = field(default_factory=dict)

    def add(self, segments: Sequence[Damaged]) -> None:
        for seg in segments:
            if seg.held is None:
                self.unknown.append(seg)
                continue
            for key, version in seg.held:
                if self._wanted(key, version) and _newer(version, self.known.get(key)):
                    self.known[key] = (version, seg)

    def _wanted(self, key: str, version: str) -> bool:
        if key != self.key_prefix if self.exact else not key.startswith(self.key_prefix):
            return False
        order = version_order(version)
        return order is not None and (self.at_ns is None or order[0] <= self.at_ns)

    def saw(self, key: str, version: str) -> None:
        """The restore chose ``version`` for ``key``."""
        if key in self.known:
            self.chosen[key] = version

    def problems(self, restored_nothing: bool) -> list[Problem]:
        """One problem per key that lost its version, one per unreadable segment."""
        lost = (self._lost(key, v, seg) for key, (v, seg) in sorted(self.known.items()))
        out = [p for p in lost if p is not None]
        for seg in self.unknown:
            where = f"segment {seg.segment} could not be read ({seg.why}); its header is unreadable"
            if self.exact:
                tail = (
                    "no readable manifest of this key was found: it may be in that segment"
                    if restored_nothing
                    else "a newer version of this key than the one restored may be in it"
                )
                out.append(Problem(self.key_prefix, "", f"{where}: {tail}"))
            else:
                tail = f"any version under prefix {self.key_prefix!r} in it is missing here"
                out.append(Problem("", "", f"{where}: {tail}"))
        return out

    def _lost(self, key: str, version: str, seg: Damaged) -> Problem | None:
        chosen = self.chosen.get(key)
        if chosen is not None and not _newer(version, (chosen, seg)):
            return None  # a readable copy of it, or a newer version, was restored
        where = f"its manifest is in damaged segment {seg.segment} ({seg.why})"
        if chosen is None:
            return Problem(key, version, f"{where}: not restored")
        return Problem(key, version, f"{where}: restored the older version {chosen} instead")


def _newer(version: str, than: tuple[str, Damaged] | None) -> bool:
    if than is None:
        return True
    mine, other = version_order(version), version_order(than[0])
    return mine is not None and (other is None or mine > other)
