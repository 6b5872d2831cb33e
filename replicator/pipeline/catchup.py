"""Objects a peer was too far behind to take when they were read (backfill).

An object is read once for every peer lacking it. A peer whose pack uploads
are behind drops out of an object instead of holding the read window for
the others (``ship.py``); the object is noted here for that peer and read
again for it alone once the listing is done, so each peer progresses at its
own pace. Notes are spilled to a temporary file: a long listing costs disk,
not memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from replicator.origins import ObjectVersion
from replicator.pipeline.compare import Spill, version_from_json, version_to_json

#: An object left for a peer: the version, its manifest's observation
#: number, and whether its outcome is still to be reported (no other peer
#: took it).
Note = tuple[ObjectVersion, int, bool]


def _encode(note: Note) -> Any:
    return [version_to_json(note[0]), note[1], note[2]]


def _decode(raw: Any) -> Note:
    return version_from_json(raw[0]), int(raw[1]), bool(raw[2])


class CatchUp:
    """Per peer, the objects it was left out of."""

    def __init__(self) -> None:
        self._spills: dict[str, Spill[Note]] = {}

    def add(self, peer: str, obj: ObjectVersion, observed: int, report: bool) -> None:
        spill = self._spills.get(peer)
        if spill is None:
            fd, path = tempfile.mkstemp(prefix="replicator-catch-up-")
            os.close(fd)
            spill = self._spills[peer] = Spill(Path(path), _encode, _decode)
        spill.add((obj, observed, report))

    def count(self, peer: str) -> int:
        spill = self._spills.get(peer)
        return 0 if spill is None else spill.count

    def peers(self) -> list[str]:
        return [p for p, s in self._spills.items() if s.count]

    def replay(self, peer: str) -> AsyncIterator[Note]:
        """The notes of ``peer``, in the order they were made; once."""
        return self._spills[peer].replay()

    def remove(self) -> None:
        for spill in self._spills.values():
            spill.remove()
        self._spills.clear()
