"""Packs written to the peer while they fill, for peers that can (filesystem).

A pack held in memory costs its size twice (the open pack, plus the one
being written), and every new chunk is copied into it before it is copied
again to the peer. A peer that is a directory on a local disk instead
offers a *spool*: a temporary file in the peer that the pack writer appends
each new chunk to as it is placed, straight from the read window (one
``writev`` per batch, no pack buffer), with the disk's writeback started at
once so the disk works while the next window is chunked. Sealing the pack
is then an fsync and a rename (``put_spool``): the pack costs no memory,
and its final sync waits only for the tail still being written back.

A backend (or wrapper) offers spools by having both methods; wrappers
forward them to their inner backend through the functions below, so no
wrapper hides the capability. Everything else about a pack (its name, the
BLAKE3 of its bytes; index after pack; durable before a manifest names it)
is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from replicator._native import Blake3Hasher

#: A piece of a pack as handed to a spool (a view of a read window, or bytes).
Piece = bytes | bytearray | memoryview


class Spool(Protocol):
    """A pack's bytes on their way into the peer (not visible, not durable)."""

    @property
    def size(self) -> int: ...

    def write(self, pieces: Sequence[Piece]) -> None:
        """Append ``pieces`` in order (blocking: call it in a thread)."""

    def discard(self) -> None:
        """Drop the bytes (blocking); the spool is unusable afterwards."""


async def open_spool(backend: Any, prefix: str) -> Spool | None:
    """A new spool for objects under ``prefix``, or None when the backend
    (through its wrappers) has none: the caller keeps the pack in memory."""
    fn = getattr(backend, "open_spool", None)
    if not callable(fn):
        return None
    spool: Spool | None = await fn(prefix)
    return spool


async def put_spool(backend: Any, key: str, spool: Spool) -> None:
    """Make the spool's bytes the durable object ``key`` (a put of them)."""
    await backend.put_spool(key, spool)


async def settle(writes: Sequence[asyncio.Future[None]]) -> None:
    """Wait for spool appends (their errors raise); cancelling the caller
    does not cancel them (a later append and the seal wait on them too)."""
    for w in writes:
        await asyncio.shield(w)


async def drained(writes: Sequence[asyncio.Future[None]]) -> None:
    """Wait until spool appends are over, failed or not: a failed append is
    its pack's failure (the seal raises it, for that peer alone), not the
    reader's; like ``settle``, cancelling the caller does not cancel them."""
    for w in writes:
        with contextlib.suppress(Exception):
            await asyncio.shield(w)


#: Appends of at least this many bytes hash and write in two threads at once.
PARALLEL_APPEND_BYTES = 1024 * 1024


async def append(
    spool: Spool, hasher: Blake3Hasher, pieces: Sequence[Piece], before: asyncio.Future[None] | None
) -> None:
    if before is not None:
        await asyncio.shield(before)  # its error is this one's: the spool lacks bytes
    if sum(memoryview(p).nbytes for p in pieces) < PARALLEL_APPEND_BYTES:
        await asyncio.to_thread(_write, spool, hasher, pieces)
        return
    # The pack's BLAKE3 and the write of the same bytes, each in its own
    # thread: a window of new chunks took both in turn (7-17 ms), longer than
    # cutting the next window, and the read after that waited for it
    # (docs/performance.md "win3"). Both are over before this returns, failed
    # or not: until then they read the caller's window.
    results = await asyncio.gather(
        asyncio.to_thread(spool.write, pieces),
        asyncio.to_thread(_hash, hasher, pieces),
        return_exceptions=True,
    )
    for r in results:
        if isinstance(r, BaseException):
            raise r


def _hash(hasher: Blake3Hasher, pieces: Sequence[Piece]) -> None:
    for p in pieces:
        hasher.update(p)


def _write(spool: Spool, hasher: Blake3Hasher, pieces: Sequence[Piece]) -> None:
    _hash(hasher, pieces)
    spool.write(pieces)
