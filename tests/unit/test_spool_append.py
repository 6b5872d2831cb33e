"""A spool append of a window's new chunks hashes and writes them in two
threads at once (store/spool.py; docs/performance.md "win3"): the same pack
bytes and name as one after the other, and never done while one of the two
still reads the caller's window, even when the other failed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pytest

from replicator._native import Blake3Hasher, blake3_digest
from replicator.store import spool
from replicator.store.spool import Piece, append

MIB = 1024 * 1024


class ListSpool:
    """A spool that keeps the bytes in memory, noting the writing thread."""

    def __init__(self, fail: bool = False) -> None:
        self.data = bytearray()
        self.fail = fail
        self.threads: set[int] = set()
        self.started = threading.Event()

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, pieces: Sequence[Piece]) -> None:
        self.threads.add(threading.get_ident())
        self.started.set()
        if self.fail:
            raise OSError(28, "No space left on device")
        for p in pieces:
            self.data += p

    def discard(self) -> None:
        self.data.clear()


#: A bound, not a timing: with the two at once the write starts at once.
WAIT_SECONDS = 5.0


class SlowHasher:
    """Hashes like Blake3Hasher, slowly, and says when it is done. With
    ``wait_for`` it hashes only once that write has started (so it never
    hashes before, or in the same thread as, the write)."""

    def __init__(self, wait_for: ListSpool | None = None) -> None:
        self.inner = Blake3Hasher()
        self.done = threading.Event()
        self.threads: set[int] = set()
        self.wait_for = wait_for
        self.saw_write = True

    def update(self, data: Piece) -> None:
        self.threads.add(threading.get_ident())
        if self.wait_for is not None:
            self.saw_write = self.saw_write and self.wait_for.started.wait(WAIT_SECONDS)
        time.sleep(0.001)
        self.inner.update(data)

    def finish(self) -> None:
        self.done.set()


def _pieces(total: int, size: int) -> list[memoryview]:
    window = memoryview(os.urandom(total))
    return [window[i : i + size] for i in range(0, total, size)]


async def test_a_large_append_writes_and_hashes_the_same_bytes_in_two_threads() -> None:
    pieces = _pieces(2 * MIB + 12_345, 80 * 1024)
    whole = b"".join(bytes(p) for p in pieces)
    out = ListSpool()
    hasher = SlowHasher(wait_for=out)
    await append(out, hasher, pieces, None)  # type: ignore[arg-type]
    assert bytes(out.data) == whole
    assert hasher.inner.digest() == blake3_digest(whole)
    assert hasher.saw_write  # the write began while the hash was under way


async def test_a_small_append_stays_one_thread_hop() -> None:
    pieces = _pieces(spool.PARALLEL_APPEND_BYTES - 1, 4096)
    out, hasher = ListSpool(), SlowHasher()
    await append(out, hasher, pieces, None)  # type: ignore[arg-type]
    assert out.threads == hasher.threads and len(out.threads) == 1
    assert hasher.inner.digest() == blake3_digest(bytes(out.data))


async def test_a_failed_write_returns_only_once_the_hash_is_over() -> None:
    """The caller refills its window once the append is over: a hash still
    reading it then would hash the next window's bytes."""
    pieces = _pieces(2 * MIB, 128 * 1024)
    out, hasher = ListSpool(fail=True), SlowHasher()
    original = spool._hash

    def hash_then_note(h: SlowHasher, ps: Sequence[Piece]) -> None:
        original(h, ps)  # type: ignore[arg-type]
        h.finish()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spool, "_hash", hash_then_note)
        with pytest.raises(OSError, match="No space left"):
            await append(out, hasher, pieces, None)  # type: ignore[arg-type]
    assert hasher.done.is_set()
