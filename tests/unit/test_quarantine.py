"""The quarantine/relocation records of a peer (store/quarantine.py), on a
real filesystem backend: written, listed back, and applied to manifest runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.errors import ReplicatorError
from replicator.store.backends import FsBackend
from replicator.store.format import ChunkRef, PackRun
from replicator.store.index_cache import Location
from replicator.store.quarantine import DamageMap, clear, quarantine, relocate

P, Q, R = (bytes([n]) * 32 for n in (1, 2, 3))
A, B, C = (bytes([n]) * 32 for n in (10, 11, 12))


def ref(d: bytes, n: int) -> ChunkRef:
    return ChunkRef(d, n, n)


async def test_records_round_trip_and_clear(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    assert await quarantine(backend, P, B, "BLAKE3 mismatch")
    assert not await quarantine(backend, P, B, "again")  # first finding wins
    await relocate(backend, P, B, Location(Q, 0, 100, 100))
    damage = await DamageMap.load(backend)
    assert damage.quarantined == {(P, B)} and damage.relocated == {(P, B): Location(Q, 0, 100, 100)}
    assert damage.is_bad(P, B) and not damage.is_bad(P, A) and not damage.is_bad(Q, B)
    await clear(backend, P, B)
    after = await DamageMap.load(backend)
    assert after.quarantined == set() and after.is_bad(P, B)  # relocated copies stay bad


def test_relocated_chunks_are_read_from_their_new_place() -> None:
    damage = DamageMap(relocated={(P, B): Location(Q, 500, 20, 20)})
    run = PackRun(P, 1000, (ref(A, 10), ref(B, 20), ref(C, 30)))
    assert damage.effective_runs([run]) == [
        PackRun(P, 1000, (ref(A, 10),)),
        PackRun(Q, 500, (ref(B, 20),)),
        PackRun(P, 1030, (ref(C, 30),)),
    ]
    assert DamageMap().effective_runs([run]) == [run]


def test_relocations_are_followed_and_loops_refused() -> None:
    chain = DamageMap(relocated={(P, B): Location(Q, 0, 20, 20), (Q, B): Location(R, 40, 20, 20)})
    assert chain.resolve(P, B) == Location(R, 40, 20, 20)
    assert chain.resolve(P, A) is None
    loop = DamageMap(relocated={(P, B): Location(Q, 0, 20, 20), (Q, B): Location(P, 0, 20, 20)})
    with pytest.raises(ReplicatorError, match="loop"):
        loop.resolve(P, B)
