"""Where each chunk of one object lives at one peer, in compact arrays.

A backfilled object's placements wait in memory until its packs are sealed
and its manifest is written. One Python object per chunk (a Placement with
its own ints, ~170 bytes) made them the only memory that grew with an
object: 11 MB for a 4 GiB object (65,536 chunks at the default sizes).
Here a chunk costs 22 bytes in arrays; the packs are listed once each.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from replicator.records import record

if TYPE_CHECKING:
    from replicator.pipeline.plan import OpenPack, Placement


@record(frozen=True, slots=True)
class Entry:
    """One chunk's place inside its pack (what its index entry says)."""

    offset: int
    length: int
    stored_length: int
    compression: str = "none"


class Placed:
    """The placements of one object's chunks at one peer, in chunk order."""

    __slots__ = ("_ids", "compressed", "lengths", "new", "offsets", "pack_ix", "packs", "stored")

    def __init__(self) -> None:
        self.packs: list[bytes | OpenPack] = []
        self._ids: dict[bytes | OpenPack, int] = {}
        self.pack_ix = array("I")
        self.offsets = array("Q")
        self.lengths = array("I")
        self.stored = array("I")
        self.compressed = bytearray()  # 1: zstd
        self.new = bytearray()  # 1: shipped by this placement

    def __len__(self) -> int:
        return len(self.offsets)

    def add(
        self,
        pack: bytes | OpenPack,
        offset: int,
        length: int,
        stored_length: int,
        compression: str,
        *,
        new: bool,
    ) -> None:
        ix = self._ids.get(pack)
        if ix is None:
            ix = self._ids[pack] = len(self.packs)
            self.packs.append(pack)
        self.pack_ix.append(ix)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.stored.append(stored_length)
        self.compressed.append(compression == "zstd")
        self.new.append(new)

    def repeat(self, i: int) -> None:
        """Place a chunk where chunk ``i`` went (a repeat: nothing shipped)."""
        p = self.packs[self.pack_ix[i]]
        comp = "zstd" if self.compressed[i] else "none"
        self.add(p, self.offsets[i], self.lengths[i], self.stored[i], comp, new=False)

    def entry(self, i: int) -> Entry:
        comp = "zstd" if self.compressed[i] else "none"
        return Entry(self.offsets[i], self.lengths[i], self.stored[i], comp)

    def pack_of(self, i: int) -> bytes | OpenPack:
        return self.packs[self.pack_ix[i]]

    def shipped_bytes(self) -> int:
        return sum(n for n, new in zip(self.lengths, self.new, strict=True) if new)

    def total_bytes(self) -> int:
        return sum(self.lengths)

    def split(self, counts: Sequence[int]) -> list[Placed]:
        """One Placed per run of ``counts`` chunks, in order (a batch of
        several objects placed together, given back per object)."""
        out: list[Placed] = []
        start = 0
        for n in counts:
            part = Placed()
            for i in range(start, start + n):
                self._copy(i, part)
            out.append(part)
            start += n
        return out

    def _copy(self, i: int, into: Placed) -> None:
        comp = "zstd" if self.compressed[i] else "none"
        p = self.packs[self.pack_ix[i]]
        into.add(p, self.offsets[i], self.lengths[i], self.stored[i], comp, new=bool(self.new[i]))

    def placements(self) -> Iterator[Placement]:
        """One Placement per chunk (for callers that want records)."""
        from replicator.pipeline.plan import Placement  # noqa: PLC0415 - plan imports this module

        for i in range(len(self)):
            e = self.entry(i)
            yield Placement(
                self.pack_of(i),
                e.offset,
                e.length,
                e.stored_length,
                e.compression,
                bool(self.new[i]),
            )
