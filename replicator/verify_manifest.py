"""verify's checks of one manifest (``replicator/verify.py`` runs them over
a store and reports): structural (every referenced pack exists, one HEAD per
pack, and is long enough for every run; every chunk sits in the pack's index
at the offset and lengths the manifest says) and deep (every chunk fetched,
decoded and re-hashed, and the whole-object BLAKE3 compared).

``Packs`` keeps each pack's size and the most recently used indexes parsed,
shared by every manifest of a run; ``not_in_index`` is the one index check,
also used by ``repair_segments``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replicator._native import Blake3Hasher
from replicator.errors import NotFoundError, ReplicatorError
from replicator.restore import Progress
from replicator.store.backend import Backend
from replicator.store.format import ChunkRef, IndexEntry, Manifest, PackRun, index_key, pack_key
from replicator.store.manifest_store import ManifestStore
from replicator.store.quarantine import DamageMap, Findings
from replicator.store.reader import (
    ChunkError,
    Problem,
    VersionEntry,
    decode_chunks,
    fetch_run,
    parse_index,
    read_manifest,
    split_run,
)

if TYPE_CHECKING:
    from replicator.verify import VerifyReport

#: Parsed pack indexes kept at once (an index lists every chunk of a pack).
INDEX_CACHE = 256


class Packs:
    """HEAD each pack once; keep the most recently used indexes parsed."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.sizes: dict[bytes, asyncio.Task[int | None]] = {}
        self.indexes: OrderedDict[bytes, asyncio.Task[dict[tuple[bytes, int], IndexEntry]]]
        self.indexes = OrderedDict()

    async def size(self, pack: bytes) -> int | None:
        if pack not in self.sizes:
            self.sizes[pack] = asyncio.create_task(self._head(pack))
        return await self.sizes[pack]

    async def _head(self, pack: bytes) -> int | None:
        info = await self.backend.head(pack_key(pack))
        return None if info is None else info.size

    async def index(self, pack: bytes) -> dict[tuple[bytes, int], IndexEntry]:
        """Index entries by (digest, offset); ReplicatorError when unusable."""
        task = self.indexes.get(pack)
        if task is None:
            task = self.indexes[pack] = asyncio.create_task(self._load_index(pack))
            while len(self.indexes) > INDEX_CACHE:
                self.indexes.popitem(last=False)
        self.indexes.move_to_end(pack)
        return await task

    async def _load_index(self, pack: bytes) -> dict[tuple[bytes, int], IndexEntry]:
        try:
            idx = parse_index(await self.backend.get(index_key(pack)))
        except NotFoundError as exc:
            raise ReplicatorError(f"index of pack {pack.hex()} is missing") from exc
        size = await self.size(pack)
        if idx.pack != pack or (size is not None and idx.size != size):
            raise ReplicatorError(
                f"index of pack {pack.hex()} describes pack {idx.pack.hex()} of {idx.size} "
                f"bytes (stored pack: {size} bytes)"
            )
        return {(e.digest, e.offset): e for e in idx.entries}


@dataclass(slots=True)
class Checker:
    """The checks of one manifest at a time, adding to one run's ``report``
    and ``findings`` (damaged chunk copies, with the versions they break)."""

    backend: Backend
    manifests: ManifestStore
    packs: Packs
    report: VerifyReport
    progress: Progress
    damage: DamageMap
    findings: Findings

    def problem(
        self, entry: VersionEntry, message: str, pack: bytes = b"", chunk: bytes = b""
    ) -> None:
        self.report.problems.append(
            Problem(entry.key, entry.version_name, message, pack.hex(), chunk.hex())
        )

    async def check_one(self, item: tuple[VersionEntry, bool]) -> None:
        """Check one manifest (deeply if asked); a failure is a problem, not raised."""
        entry, deep = item
        try:
            await self.check(entry, deep)
        except ReplicatorError as exc:
            self.problem(entry, str(exc))
        self.progress.object_done(entry.key)

    async def check(self, entry: VersionEntry, deep: bool) -> None:
        manifest = await read_manifest(self.manifests, entry)
        self.report.manifests += 1
        if manifest.removed:
            self.report.tombstones += 1
            if manifest.runs:
                self.problem(entry, "tombstone lists chunks")
            return
        total = sum(c.length for r in manifest.runs for c in r.chunks)
        if total != manifest.identity.size:
            self.problem(
                entry, f"chunks add up to {total} bytes, object size is {manifest.identity.size}"
            )
        self.report.chunks += manifest.chunk_count()
        runs = self.damage.effective_runs(manifest.runs)
        for run in runs:
            await self.structural(entry, run)
        if deep:
            self.report.deep_checked += 1
            await self.rehash(entry, manifest, runs)

    def damaged(
        self, entry: VersionEntry, pack: bytes, chunks: Iterable[ChunkRef], reason: str
    ) -> None:
        for c in chunks:
            self.findings.add(pack, c, reason, entry.key, entry.version_name)

    async def structural(self, entry: VersionEntry, run: PackRun) -> None:
        first = run.chunks[0].digest if run.chunks else b""
        size = await self.packs.size(run.pack)
        if size is None:
            self.problem(
                entry,
                f"pack is missing: {len(run.chunks)} chunks of this version lost, first named",
                run.pack,
                first,
            )
            self.damaged(entry, run.pack, run.chunks, "pack is missing")
            return
        if run.offset + run.stored_length > size:
            self.problem(
                entry,
                f"pack is too short: run ends at "
                f"{run.offset + run.stored_length}, pack has {size} bytes",
                run.pack,
                first,
            )
            self.damaged(entry, run.pack, _past(run, size), "pack is too short")
        try:
            index = await self.packs.index(run.pack)
        except ReplicatorError as exc:
            self.problem(entry, str(exc), run.pack, first)
            self.damaged(entry, run.pack, run.chunks, "pack index unusable")
            return
        self.in_index(entry, run, index)

    def in_index(
        self, entry: VersionEntry, run: PackRun, index: dict[tuple[bytes, int], IndexEntry]
    ) -> None:
        for c, pos in not_in_index(run, index):
            self.problem(
                entry,
                f"chunk not in the pack's index at offset {pos} with length {c.stored_length}",
                run.pack,
                c.digest,
            )
            self.damaged(entry, run.pack, [c], "not in the pack's index")

    async def rehash(self, entry: VersionEntry, manifest: Manifest, runs: list[PackRun]) -> None:
        # The whole-object digest is one incremental BLAKE3 over the chunks
        # already decoded (no chunker pass on top of it).
        hasher = Blake3Hasher()
        intact = True
        for run in runs:
            if await self.packs.size(run.pack) is None:
                intact = False  # already a structural problem; nothing to fetch
                continue
            for sub in split_run(run):
                try:
                    data = await fetch_run(self.backend, sub)
                except ChunkError as exc:
                    self.problem(entry, str(exc), exc.pack, exc.chunk or b"")
                    intact = False
                    continue
                ok, n = await asyncio.to_thread(self._hash_run, entry, sub, data, hasher)
                intact &= ok
                self.report.bytes_rehashed += n
                self.progress.advance(n)
        digest = hasher.digest()
        if intact and digest != manifest.digest:
            self.problem(
                entry,
                f"whole-object BLAKE3 {digest.hex()} != manifest {manifest.digest.hex()}",
            )

    def _hash_run(
        self, entry: VersionEntry, run: PackRun, data: bytes, hasher: Blake3Hasher
    ) -> tuple[bool, int]:
        # Runs in a worker thread: megabytes of hashing per hop, never a chunk.
        intact, n = True, 0
        for chunk, result in decode_chunks(run, data):
            if isinstance(result, ChunkError):
                self.problem(entry, str(result), result.pack, result.chunk or b"")
                self.damaged(entry, run.pack, [chunk], str(result))
                intact = False
            else:
                hasher.update(result)
                n += len(result)
        return intact, n


def _past(run: PackRun, size: int) -> list[ChunkRef]:
    """The chunks of ``run`` that end beyond a pack of ``size`` bytes."""
    out, pos = [], run.offset
    for c in run.chunks:
        pos += c.stored_length
        if pos > size:
            out.append(c)
    return out


def not_in_index(
    run: PackRun, index: dict[tuple[bytes, int], IndexEntry]
) -> Iterator[tuple[ChunkRef, int]]:
    """Each chunk of ``run`` (with its offset) that the pack's index does not
    list at that offset with the same lengths and compression."""
    pos = run.offset
    for c in run.chunks:
        e = index.get((c.digest, pos))
        if e is None or (e.length, e.stored_length, e.compression) != (
            c.length,
            c.stored_length,
            c.compression,
        ):
            yield c, pos
        pos += c.stored_length
