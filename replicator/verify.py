"""Check a replica store: every manifest against the packs and indexes it
references (structural), and optionally the bytes themselves (deep).

Structural: every manifest parses and is stored under its own name; every
referenced pack exists (one HEAD per pack) and is long enough for every run;
every chunk sits in the pack's index at the offset and length the manifest
says. Deep: additionally fetch every chunk of the (sampled) manifests,
re-hash it, and check the whole-object BLAKE3.

Without a key prefix the whole store is checked and packs that no manifest
references are reported as information (garbage from an interrupted writer,
or a writer in progress), never as errors.

Chunks that ``repair`` relocated are checked at their new place (see
``store/quarantine.py``); every damaged chunk copy found is recorded in the
peer's ``quarantine/`` (best effort: a read-only credential only loses the
record, not the finding), so no writer deduplicates onto it again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator._native import Blake3Hasher
from replicator.errors import NotFoundError, ReplicatorError
from replicator.restore import NoProgress, Progress
from replicator.store.backend import Backend
from replicator.store.format import (
    INDEX,
    PACKS,
    ChunkRef,
    IndexEntry,
    Manifest,
    PackRun,
    index_key,
    pack_key,
)
from replicator.store.manifest_store import ManifestStore, manifest_store
from replicator.store.quarantine import DamageMap, Findings, quarantine
from replicator.store.reader import (
    ChunkError,
    Problem,
    VersionEntry,
    decode_chunks,
    fetch_run,
    parse_index,
    read_manifest,
    read_store_config,
    split_run,
)
from replicator.workers import WorkerPool

#: Parsed pack indexes kept at once (an index lists every chunk of a pack).
INDEX_CACHE = 256


@dataclass(slots=True)
class VerifyReport:
    deep: bool
    sample: float
    seed: int
    manifests: int = 0
    tombstones: int = 0
    deep_checked: int = 0
    packs: int = 0
    chunks: int = 0
    bytes_rehashed: int = 0
    damaged_chunks: int = 0  # distinct damaged chunk copies found
    quarantined: int = 0  # of which newly recorded in quarantine/ by this run
    problems: list[Problem] = field(default_factory=list)
    info: list[Problem] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_seconds"] = round(self.elapsed_seconds, 6)
        out["ok"] = self.ok
        return out


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
class _Checker:
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


async def verify(
    backend: Backend,
    bucket: str,
    key_prefix: str | None,
    *,
    deep: bool = False,
    sample: float = 1.0,
    seed: int = 0,
    parallel: int = 4,
    progress: Progress | None = None,
    findings: Findings | None = None,
    manifests: ManifestStore | None = None,
) -> VerifyReport:
    """Check the manifests of ``bucket`` under ``key_prefix`` (the whole
    store, every bucket, when ``key_prefix`` is None). Damaged chunk copies
    are collected in ``findings`` (with the versions they break).
    ``manifests``: the peer's store when it is open already."""
    started = time.monotonic()
    config = await read_store_config(backend)
    manifests = manifest_store(backend, config) if manifests is None else manifests
    report = VerifyReport(deep=deep, sample=sample, seed=seed)
    damage = await DamageMap.load(backend)
    findings = Findings() if findings is None else findings
    checker = _Checker(
        backend, manifests, Packs(backend), report, progress or NoProgress(), damage, findings
    )
    entries = (
        manifests.entries(None, "") if key_prefix is None else manifests.entries(bucket, key_prefix)
    )
    await _check_all(checker, entries, deep=deep, sample=sample, seed=seed, parallel=parallel)
    await _audit(manifests, key_prefix, report)
    report.packs = len(checker.packs.sizes)
    if key_prefix is None:
        await _unreferenced(backend, set(checker.packs.sizes), report)
    await _record_damage(backend, damage, findings, report)
    report.elapsed_seconds = time.monotonic() - started
    return report


async def _audit(manifests: ManifestStore, key_prefix: str | None, report: VerifyReport) -> None:
    """What the store's layout itself can get wrong, beyond each manifest: a
    store that keeps many manifests per object (format 3) answers ``audit()``
    with its unreadable segments and the versions it holds with two
    different bytes (each a problem: exit 1)."""
    audit = getattr(manifests, "audit", None)
    if not callable(audit):
        return  # one object per manifest: every check is per manifest
    for p in await audit():
        key, version, segment, message = p.key, p.version, p.segment, p.message
        if key_prefix is not None and key and not key.startswith(key_prefix):
            continue
        # A version's finding names its segments; a damaged segment is named here.
        where = message if key else f"segment {segment}: {message}"
        report.problems.append(Problem(key, version, where))


async def _unreferenced(backend: Backend, referenced: set[bytes], report: VerifyReport) -> None:
    """Packs and indexes no manifest points at: information, not errors
    (a missing index of a referenced pack is already a structural problem)."""
    async for info in backend.list(PACKS):
        name = _hex_name(info.key)
        if name is not None and name not in referenced:
            msg = f"pack of {info.size} bytes is not referenced by any manifest"
            report.info.append(Problem("", "", msg, pack=name.hex()))
    async for info in backend.list(INDEX):
        name = _hex_name(info.key)
        if name is not None and name not in referenced:
            msg = "index of a pack that no manifest references"
            report.info.append(Problem("", "", msg, pack=name.hex()))


async def _check_all(
    checker: _Checker,
    entries: AsyncIterator[VersionEntry],
    *,
    deep: bool,
    sample: float,
    seed: int,
    parallel: int,
) -> None:
    # The sample is drawn here, in listing order, so a seed replays exactly.
    rng = random.Random(seed)
    async with WorkerPool(checker.check_one, parallel) as pool:
        async for entry in entries:
            await pool.put((entry, deep and rng.random() < sample))


async def _record_damage(
    backend: Backend, known: DamageMap, findings: Findings, report: VerifyReport
) -> None:
    """Quarantine every damaged copy not already recorded."""
    report.damaged_chunks = len(findings.damaged)
    for (pack, chunk), d in findings.damaged.items():
        if known.is_bad(pack, chunk):
            continue
        try:
            report.quarantined += await quarantine(backend, pack, chunk, d.reason)
        except (ReplicatorError, OSError) as exc:
            msg = f"could not record the damaged chunk in quarantine/: {exc}"
            report.info.append(Problem("", "", msg, pack.hex(), chunk.hex()))


def _past(run: PackRun, size: int) -> list[ChunkRef]:
    """The chunks of ``run`` that end beyond a pack of ``size`` bytes."""
    out, pos = [], run.offset
    for c in run.chunks:
        pos += c.stored_length
        if pos > size:
            out.append(c)
    return out


def _hex_name(store_key: str) -> bytes | None:
    try:
        return bytes.fromhex(store_key.rsplit("/", 1)[-1])
    except ValueError:
        return None


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
