"""Ship one object: read it once, and give each peer the chunks it lacks.

The one per-peer window loop of both paths: backfill calls :func:`ship`
with its peers' pack writers, the daemon's service with each lane's writer
of the object's size class (it was ``fanout.fan_out``, a near-copy).

Each window's chunk batch goes to every target peer's pack writer at once;
the window buffer is reused only after all of them took what they needed,
so memory per object in flight is one window (plus the carry).

Each peer has its own outcome: a writer that fails (its peer is failing:
a HEAD or LIST of the planning step, say) drops out of this object and the
others go on, so one peer's failure never costs another peer its copy.
Reading stops once no writer is left (``Shipped.complete`` stays False).

A peer that is *behind* does not hold the others back either: when placing
the next window would make its writer wait for an earlier pack's upload,
at a peer whose last pack took over ``BEHIND_SECONDS`` to write (a healthy
peer writes one in well under that), while another peer's writer would not
wait, it drops out of this object (listed in ``behind``) and the object is
read again for it later (backfill's catch-up; the daemon's lane keeps the
version wanted and reads it again alone): a re-read costs source bytes, so
a peer only briefly slower than the others is waited for. With
``may_defer=False`` (a catch-up, a single peer) every writer waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import field
from typing import cast

from replicator._native import ChunkerParams
from replicator.events import ChangeEvent
from replicator.origins import ObjectReader
from replicator.pipeline.manifests import placed_manifest
from replicator.pipeline.plan import PackWriter
from replicator.pipeline.windows import (
    WINDOWS,
    Chunked,
    Previous,
    PreviousTree,
    WindowChunks,
    WindowPool,
    chunk_windows,
)
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import Manifest, SourceIdentity
from replicator.store.manifest_store import ManifestStore, manifests_of
from replicator.store.placed import Placed
from replicator.store.subtrees import SubtreeCache

#: Read windows are sized in multiples of this for objects smaller than the
#: origin's window (the +1 byte lets the first read see the end of the file).
SMALL_WINDOW = 64 * 1024
#: How long the cutter's hints (the previous version's chunks) are waited
#: for: a slow or failing first peer (retries) must not delay the copy.
HINTS_SECONDS = 1.0
#: A peer whose last pack took longer than this to write, and whose writer
#: would wait, is behind (left out of objects rather than waited for).
BEHIND_SECONDS = 2.0


@record
class Shipped:
    size: int = 0
    digest: bytes = b""  # whole-object BLAKE3
    digests: bytearray = field(default_factory=bytearray)  # 32 bytes per chunk, in order
    placements: dict[str, Placed] = field(default_factory=dict)  # per live peer, compact
    failures: dict[str, Exception] = field(default_factory=dict)  # peers that dropped out
    behind: list[str] = field(default_factory=list)  # peers left out for being behind
    complete: bool = False  # False when every writer dropped out before the end

    def manifest(
        self, identity: SourceIdentity, params: ChunkerParams, peer: str, names: Sequence[bytes]
    ) -> Manifest:
        """The object's manifest at ``peer``, once its packs are durable
        (``names``: theirs, as ``durable.pack_names`` gives them)."""
        placed = self.placements[peer]
        return placed_manifest(
            identity, self.digest, params, self.digests, placed=placed, names=names
        )


def read_window(size: int, window_size: int) -> int:
    """Read window for one object of ``size`` bytes: no larger than the
    object. Two windows (three past the first) are used per object: fresh
    8 MiB ones for a 4 KiB file cost more than everything else done for it
    (measured: 24 ms in the daemon, ~20 ms in backfill; docs/performance.md),
    and pooled ones (``windows.WindowPool``) of that size would keep memory
    for nothing."""
    fits = -(-(size + 1) // SMALL_WINDOW) * SMALL_WINDOW
    return min(window_size, fits)


async def ship(
    reader: ObjectReader,
    params: ChunkerParams,
    window_size: int,
    writers: Sequence[PackWriter],
    *,
    may_defer: bool = False,
    behind_seconds: float = BEHIND_SECONDS,
    pool: WindowPool = WINDOWS,
    previous: PreviousVersion | None = None,
    subtrees: SubtreeCache | None = None,
) -> Shipped:
    """Chunk the object and place every chunk at every writer's peer; a
    writer that failed is in ``failures``, one left out in ``behind``,
    instead of ``placements``. ``previous``: an earlier version's chunks,
    hints for the cutter, and its block CVs (:func:`previous_chunks`); the
    object's own CVs are kept in ``subtrees`` for its next version."""
    out = Shipped(placements={w.name: Placed() for w in writers})
    chunked = Chunked()
    live = list(writers)
    # An async generator (typed as an iterator), closed however the loop
    # ends, so an abandoned read is cancelled at once.
    windows = cast(
        AsyncGenerator[WindowChunks],
        chunk_windows(
            reader,
            params,
            window_size,
            chunked,
            pool,
            previous=None if previous is None else previous.chunks,
            previous_tree=None if previous is None else previous.tree,
        ),
    )
    async with contextlib.aclosing(windows):
        async for batch in windows:
            if not len(batch):
                continue
            if may_defer:
                _leave_out_behind(batch, live, out, behind_seconds)
            await _place(batch, live, out)
            if not live:
                return out
            out.digests += batch.digests()
    out.size, out.digest, out.complete = chunked.size, chunked.digest, True
    if subtrees is not None and chunked.subtrees:
        await subtrees.put(out.digest, chunked.subtrees, previous.digest if previous else None)
    return out


async def _place(batch: WindowChunks, live: list[PackWriter], out: Shipped) -> None:
    """One window at every live writer; a writer that fails drops out."""
    placed = await asyncio.gather(
        *(w.place_into(batch, out.placements[w.name]) for w in live),
        return_exceptions=True,
    )
    for w, result in zip(list(live), placed, strict=True):
        if isinstance(result, Exception):
            out.failures[w.name] = result
            del out.placements[w.name]
            live.remove(w)
        elif isinstance(result, BaseException):
            raise result  # cancellation: not a peer's failure
        else:
            # Spool appends go on while the next window is chunked; this
            # window's buffer is refilled only once they are done
            # (chunk_windows waits on them).
            batch.busy.extend(result)


def _leave_out_behind(
    batch: WindowChunks, live: list[PackWriter], out: Shipped, seconds: float
) -> None:
    """Drop the writers that are behind, if every other would not wait at all."""
    nbytes = sum(batch.length(i) for i in range(len(batch)))
    behind = [w for w in live if w.would_wait(nbytes, seconds)]
    others = [w for w in live if w not in behind]
    if not behind or not others or any(w.would_wait(nbytes) for w in others):
        return
    for w in behind:
        out.behind.append(w.name)
        del out.placements[w.name]
        live.remove(w)


@record(frozen=True, slots=True)
class PreviousVersion:
    """The newest version of an object at its first peer, for updating it."""

    chunks: Previous  # hints for the cutter
    digest: bytes  # its whole BLAKE3: the key of its block CVs (store/subtrees.py)
    subtrees: bytes = b""  # its block CVs, when the local cache has them

    @property
    def tree(self) -> PreviousTree | None:
        """The block CVs with the digest they must make, for the chunker."""
        return (self.subtrees, self.digest) if self.subtrees else None


async def previous_chunks(
    stores: Sequence[Backend | ManifestStore],
    event: ChangeEvent,
    window: int,
    params: ChunkerParams,
    subtrees: SubtreeCache | None = None,
) -> PreviousVersion | None:
    """Hints for cutting an object read in more than one window: the chunks
    of its newest version at the first peer (an update of a large file
    leaves most of it unchanged: those runs are then hashed, not cut; any
    version's chunks are right, each hint is checked by its digest), with
    its block CVs when ``subtrees`` keeps them. None when there is none, it
    was cut with other parameters, or it cannot be read: hints are
    optional, and a copy never fails for want of them."""
    if event.size <= window or not stores:
        return None
    try:
        text = await asyncio.wait_for(_newest_text(stores[0], event), HINTS_SECONDS)
    except Exception:  # the copy's own reads and writes report the peer's trouble
        return None
    prev = None if text is None else previous_of(text, params)
    if prev is None or subtrees is None:
        return prev
    cvs = await subtrees.get(prev.digest)
    return prev if cvs is None else PreviousVersion(prev.chunks, prev.digest, cvs)


async def _newest_text(store: Backend | ManifestStore, event: ChangeEvent) -> bytes | None:
    manifests = manifests_of(store)
    newest = None
    async for _, versions in manifests.list_versions(event.bucket, event.key, exact=True):
        newest = versions[-1]
    return None if newest is None else await manifests.read(newest)


def previous_of(text: bytes, params: ChunkerParams) -> PreviousVersion | None:
    """A created manifest's chunk lengths and digests and its whole digest,
    if it was cut with ``params``; only the JSON is parsed (a 320 MiB file's
    manifest of ~4,000 chunks: ~3 ms, against ~25 ms for
    ``Manifest.from_bytes``' records)."""
    try:
        d = json.loads(text)
        if d["kind"] != "created" or ChunkerParams(*d["chunker"]) != params:
            return None
        chunks = [ch for run in d["runs"] for ch in run["chunks"]]
        lengths = [int(ch[1]) for ch in chunks]
        digests = bytes.fromhex("".join(ch[0] for ch in chunks))
        return PreviousVersion((lengths, digests), bytes.fromhex(d["digest"]))
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # not a manifest of this chunker: no hints


def byte_counts(placed: Placed) -> tuple[int, int]:
    """(shipped, deduplicated) object bytes of one version at one peer."""
    shipped = placed.shipped_bytes()
    return shipped, placed.total_bytes() - shipped
