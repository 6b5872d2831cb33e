"""The block CV cache (store/subtrees.py) and the chunker's use of it: the
whole digest is the same with good, stale, torn or foreign CVs, and only
good ones spare the second hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicator._native import ChunkerParams, StreamChunker, blake3_digest
from replicator.store.subtrees import SubtreeCache

MIB = 1024 * 1024


Previous = tuple[list[int], bytes]


def _chunk(
    data: bytes, previous: Previous | None = None, tree: tuple[bytes, bytes] | None = None
) -> tuple[StreamChunker, list[int], bytes, bytes]:
    s = StreamChunker(ChunkerParams(), threads=2, previous=previous, previous_tree=tree)
    lengths: list[int] = []
    digests = b""
    for i in range(0, len(data), 3 * MIB):
        cl = s.feed(data[i : i + 3 * MIB])
        lengths += list(memoryview(cl.lengths).cast("I"))
        digests += cl.digests
    last = s.finish()
    lengths += list(memoryview(last.lengths).cast("I"))
    digests += last.digests
    assert last.digest is not None
    return s, lengths, digests, last.digest


def test_only_cvs_that_make_the_previous_digest_are_taken() -> None:
    v1 = os.urandom(9 * MIB + 5)
    s1, lengths, digests, d1 = _chunk(v1)
    assert d1 == blake3_digest(v1) and len(s1.subtrees) == 32 * 10
    v2 = bytearray(v1)
    v2[4 * MIB + 3] ^= 0xFF
    good = s1.subtrees
    torn = good[:-7]
    stale = bytes(32) + good[32:]
    for tree, reused in (((good, d1), True), ((torn, d1), False), ((stale, d1), False)):
        s2, *_, d2 = _chunk(bytes(v2), (lengths, digests), tree)
        assert d2 == blake3_digest(bytes(v2))
        assert (s2.reused_blocks > 0) == reused, tree[0][:4]
    # The right CVs under another version's digest are refused too.
    s3, *_, d3 = _chunk(bytes(v2), (lengths, digests), (good, blake3_digest(b"x")))
    assert s3.reused_blocks == 0 and d3 == blake3_digest(bytes(v2))


async def test_the_cache_keeps_by_digest_and_drops_the_replaced_entry(tmp_path: Path) -> None:
    cache = SubtreeCache(tmp_path)
    a, b = blake3_digest(b"a"), blake3_digest(b"b")
    assert await cache.get(a) is None
    await cache.put(a, b"\x01" * 64)
    assert await cache.get(a) == b"\x01" * 64
    await cache.put(b, b"\x02" * 96, replaces=a)
    assert await cache.get(a) is None and await cache.get(b) == b"\x02" * 96
    await cache.put(b, b"\x03" * 96, replaces=b)  # an unchanged object keeps its entry
    assert await cache.get(b) == b"\x03" * 96
    assert sorted(p.name for p in (tmp_path / "subtrees").iterdir()) == [b.hex()]


async def test_an_unwritable_cache_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "subtrees").write_text("not a directory")
    cache = SubtreeCache(tmp_path)
    await cache.put(blake3_digest(b"a"), b"\x01" * 64)  # no error: only a hint
    assert await cache.get(blake3_digest(b"a")) is None


@pytest.mark.parametrize("size", [0, 1, MIB, MIB + 1])
def test_no_cvs_at_or_below_one_block(size: int) -> None:
    data = os.urandom(size)
    s, *_, d = _chunk(data)
    assert d == blake3_digest(data)
    assert (len(s.subtrees) == 0) == (size <= MIB)
