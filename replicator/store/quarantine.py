"""Damaged chunk copies at a peer, and where their good copies went.

Vocabulary: a *copy* is one chunk digest stored in one pack. Packs are
write-once, so a damaged copy is never fixed in place; instead two kinds of
small objects describe it (docs/store-format.md, "Quarantine and
relocation"):

- ``quarantine/<pack-hex>/<chunk-hex>``: that copy was found damaged (by
  ``verify`` or ``restore``). The pack writer never deduplicates a new
  object onto it, so backfill ships the chunk again from the source.
- ``relocated/<pack-hex>/<chunk-hex>``: ``repair`` stored a verified good
  copy elsewhere (body: where). Readers read the chunk there instead; the
  quarantine record is then deleted.

Both kinds are expected to be few (one per damaged chunk), so a reader
loads them whole at start: :class:`DamageMap`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import field

from replicator.errors import NotFoundError, ReplicatorError
from replicator.records import record
from replicator.store.backend import Backend, sha256_of
from replicator.store.format import ChunkRef, PackRun
from replicator.store.index_cache import Location

QUARANTINE = "quarantine/"
RELOCATED = "relocated/"
#: A relocated copy can itself be damaged and relocated again; a longer
#: chain than this is treated as a loop (a corrupt record), not followed.
MAX_HOPS = 16

Copy = tuple[bytes, bytes]  # (pack, chunk digest)


def quarantine_key(pack: bytes, chunk: bytes) -> str:
    return f"{QUARANTINE}{pack.hex()}/{chunk.hex()}"


def relocated_key(pack: bytes, chunk: bytes) -> str:
    return f"{RELOCATED}{pack.hex()}/{chunk.hex()}"


def _copy_of(store_key: str, prefix: str) -> Copy | None:
    parts = store_key.removeprefix(prefix).split("/")
    try:
        pack, chunk = (bytes.fromhex(p) for p in parts)
    except ValueError:
        return None  # a stray name: not ours
    return (pack, chunk) if len(pack) == len(chunk) == 32 else None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


async def quarantine(backend: Backend, pack: bytes, chunk: bytes, reason: str) -> bool:
    """Record a damaged copy; False when it was already recorded."""
    body = _dumps({"version": 1, "pack": pack.hex(), "chunk": chunk.hex(), "reason": reason})
    return await backend.put_if_absent(quarantine_key(pack, chunk), body, sha256=sha256_of(body))


async def relocate(backend: Backend, pack: bytes, chunk: bytes, to: Location) -> None:
    """Record where the good copy of a damaged one now lives. Written once:
    an existing record (an earlier repair) already points at a good copy."""
    body = _dumps(
        {
            "version": 1,
            "pack": pack.hex(),
            "chunk": chunk.hex(),
            "to": [to.pack.hex(), to.offset, to.length, to.stored_length, to.compression],
        }
    )
    await backend.put_if_absent(relocated_key(pack, chunk), body, sha256=sha256_of(body))


async def clear(backend: Backend, pack: bytes, chunk: bytes) -> None:
    """Drop the quarantine record of a copy that repair has relocated."""
    await backend.delete(quarantine_key(pack, chunk))


def _parse_relocation(data: bytes) -> Location:
    try:
        d = json.loads(data)
        p, offset, length, stored, compression = d["to"]
        return Location(bytes.fromhex(p), int(offset), int(length), int(stored), str(compression))
    except (ValueError, KeyError, TypeError) as exc:
        raise ReplicatorError(f"malformed relocation record: {exc!r}") from exc


@record
class DamageMap:
    """Every quarantined and relocated copy of one peer."""

    quarantined: set[Copy] = field(default_factory=set)
    relocated: dict[Copy, Location] = field(default_factory=dict)

    @classmethod
    async def load(cls, backend: Backend) -> DamageMap:
        out = cls()
        async for info in backend.list(QUARANTINE):
            if (copy := _copy_of(info.key, QUARANTINE)) is not None:
                out.quarantined.add(copy)
        async for info in backend.list(RELOCATED):
            if (copy := _copy_of(info.key, RELOCATED)) is None:
                continue
            try:
                out.relocated[copy] = _parse_relocation(await backend.get(info.key))
            except NotFoundError:
                continue  # removed between list and get
        return out

    def is_bad(self, pack: bytes, chunk: bytes) -> bool:
        return (pack, chunk) in self.quarantined or (pack, chunk) in self.relocated

    def __bool__(self) -> bool:
        return bool(self.quarantined or self.relocated)

    def resolve(self, pack: bytes, chunk: bytes) -> Location | None:
        """Where the good copy of a relocated one lives (following repeated
        relocations); None when the copy was never relocated."""
        found = None
        for _ in range(MAX_HOPS):
            loc = self.relocated.get((pack, chunk))
            if loc is None or loc.pack == pack:
                return loc or found
            found, pack = loc, loc.pack
        raise ReplicatorError(f"relocation records of chunk {chunk.hex()} form a loop")

    def effective_runs(self, runs: Sequence[PackRun]) -> list[PackRun]:
        """A manifest's runs with every relocated chunk read from its new
        place (as a run of its own); the manifest itself never changes."""
        if not self.relocated:
            return list(runs)
        out: list[PackRun] = []
        for run in runs:
            out.extend(self._split(run))
        return out

    def _split(self, run: PackRun) -> Iterable[PackRun]:
        pending: list[ChunkRef] = []
        start = pos = run.offset
        for c in run.chunks:
            loc = self.resolve(run.pack, c.digest)
            if loc is not None:
                if pending:
                    yield PackRun(run.pack, start, tuple(pending))
                    pending = []
                ref = ChunkRef(c.digest, loc.length, loc.stored_length, loc.compression)
                yield PackRun(loc.pack, loc.offset, (ref,))
                start = pos + c.stored_length
            else:
                pending.append(c)
            pos += c.stored_length
        if pending:
            yield PackRun(run.pack, start, tuple(pending))


@record
class Damage:
    """One damaged copy and the object versions it breaks."""

    pack: bytes
    chunk: ChunkRef
    reason: str
    versions: set[tuple[str, str]] = field(default_factory=set)  # (key, version name)


@record
class Findings:
    """Damaged copies found by one verify run, by (pack, chunk)."""

    damaged: dict[Copy, Damage] = field(default_factory=dict)

    def add(self, pack: bytes, chunk: ChunkRef, reason: str, key: str, version: str) -> bool:
        """True the first time this copy is seen damaged."""
        d = self.damaged.get((pack, chunk.digest))
        first = d is None
        if d is None:
            d = self.damaged[(pack, chunk.digest)] = Damage(pack, chunk, reason)
        d.versions.add((key, version))
        return first
