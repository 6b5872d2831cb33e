"""After the run: restore every version of every key from each peer and
compare it, byte for byte, with the copy the job kept of that version.

Each stored version is paired with the job's version of the same key and
event time (the file's ctime). Versions the daemon coalesced (a newer one
of the same key was waiting before the older was read) are legitimately
absent; everything stored must match, and every key's newest version (or
its removal) must be at every peer.
"""

from __future__ import annotations

import asyncio
import filecmp
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from replicator import config
from replicator.demo.job import Version
from replicator.restore import Selection, restore, target_path
from replicator.store.backend import Backend
from replicator.store.peer import make_backend
from replicator.store.reader import (
    VersionEntry,
    list_versions,
    read_manifest,
    read_store_config,
)


@dataclass
class PeerCheck:
    name: str
    restored: int = 0  # created versions restored and compared
    tombstones: int = 0
    object_bytes: int = 0  # what a whole-object copy of those versions sends
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Written:
    """The job's versions, by key and event time, and each key's last record."""

    by_time: dict[str, dict[int, Version]] = field(default_factory=dict)
    last: dict[str, Version] = field(default_factory=dict)

    @classmethod
    def of(cls, versions: list[Version]) -> _Written:
        out = cls()
        for v in versions:
            if not v.removed:
                out.by_time.setdefault(v.key, {})[v.event_time_ns] = v
            out.last[v.key] = v
        return out


async def check_peers(
    settings: config.Settings, versions: list[Version], scratch: Path
) -> list[PeerCheck]:
    written = _Written.of(versions)
    return [
        await check_peer(settings, d.name, written, scratch / d.name) for d in settings.destinations
    ]


async def check_peer(
    settings: config.Settings, name: str, written: _Written, scratch: Path
) -> PeerCheck:
    result = PeerCheck(name)
    backend = make_backend(settings.destination(name))
    seen: set[str] = set()
    try:
        await read_store_config(backend)
        async for key, entries in list_versions(backend, settings.source.bucket, ""):
            seen.add(key)
            removed = False
            for entry in entries:
                removed = await _one(
                    backend,
                    settings.source.bucket,
                    entry,
                    written=written,
                    scratch=scratch,
                    result=result,
                )
            _check_newest(key, entries[-1], removed, written, result)
    finally:
        await backend.close()
    for key in sorted(written.last.keys() - seen):
        result.problems.append(f"{key}: no version at all at {name}")
    return result


async def _one(
    backend: Backend,
    bucket: str,
    entry: VersionEntry,
    *,
    written: _Written,
    scratch: Path,
    result: PeerCheck,
) -> bool:
    """Check one stored version; True when it is a tombstone."""
    key, t = entry.key, entry.event_time_ns
    manifest = await read_manifest(backend, entry)
    if manifest.removed:
        result.tombstones += 1
        if not written.last.get(key, Version(key, 0, 0, Path())).removed:
            result.problems.append(f"{key}: a tombstone at {t}, but the job never removed it")
        return True
    mine = written.by_time.get(key, {}).get(t)
    if mine is None or mine.kept is None:
        result.problems.append(f"{key}: version at {t} matches no version the job wrote")
        return False
    target = scratch / str(result.restored)
    summary = await restore(backend, Selection(bucket, key, True, t), target)
    result.restored += 1
    result.object_bytes += manifest.identity.size
    if not summary.ok:
        result.problems.extend(f"{key} @ {t}: {p.message}" for p in summary.errors)
        return False
    restored = target_path(target, key)[0]
    same = await asyncio.to_thread(filecmp.cmp, restored, mine.kept, shallow=False)
    if not same:
        result.problems.append(f"{key} @ {t}: restored bytes differ from the job's copy")
    await asyncio.to_thread(shutil.rmtree, target)
    return False


def _check_newest(
    key: str, newest: VersionEntry, removed: bool, written: _Written, result: PeerCheck
) -> None:
    """The peer's newest version of ``key`` is the job's last word on it."""
    last = written.last.get(key)
    if last is None:
        result.problems.append(f"{key}: at the peer, but the job never wrote it")
    elif last.removed:
        if not removed:
            result.problems.append(f"{key}: removed by the job, still present at the peer")
    elif newest.event_time_ns != last.event_time_ns:
        result.problems.append(
            f"{key}: newest version at the peer is from {newest.event_time_ns}, "
            f"the job's last write from {last.event_time_ns}"
        )
