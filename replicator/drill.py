"""Restore drills: prove a peer can be recovered from, and measure how long it takes.

A drill restores the latest version of every key (or of a seeded sample of
keys) from one peer into scratch space with the restore library, which
re-hashes every chunk and the whole object before a file is published. The
drill then reads the restored tree back from disk and compares each file with
its manifest (length and whole-object BLAKE3) independently of the restore
code, and removes the scratch copy.

Vocabulary: the *RTO* is the wall-clock time of the restore itself (listing,
fetching, verifying while writing, fsync): how long getting the data back
takes. The read-back check is reported apart (``check_seconds``). For a
sample, ``estimated_full_rto_seconds`` scales the RTO by the bytes of every
latest version over the bytes restored: an estimate, named as one.

A drill is a separate process from the daemon, so its result is exported by
:mod:`replicator.drill_export` (a node-exporter textfile, or a Pushgateway).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicator._native import StreamChunker, blake3_digest
from replicator.restore import (
    NoProgress,
    Progress,
    RestoreSummary,
    Selection,
    UnsafeKeyError,
    restore,
    target_path,
)
from replicator.restore_damage import Damaged, damaged_segments
from replicator.store.backend import Backend
from replicator.store.manifest_store import ManifestStore, manifests_of
from replicator.store.reader import (
    Problem,
    VersionEntry,
    read_manifest,
)
from replicator.workers import run_workers

#: Bytes read at a time when the restored files are checked back.
CHECK_READ = 8 * 1024 * 1024
#: Keys kept as fall-backs when a small sample draws none (lowest draws).
SPARE_KEYS = 16


@dataclass(slots=True)
class DrillReport:
    destination: str
    sample: float
    seed: int
    keys: int = 0  # keys listed at the peer
    selected: int = 0  # keys drawn into the sample (all of them without one)
    latest_bytes: int = 0  # size of the sampled keys' latest live versions
    objects: int = 0
    bytes: int = 0
    removed: int = 0
    checked_files: int = 0
    checked_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    rto_seconds: float = 0.0
    check_seconds: float = 0.0
    started_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.objects > 0

    @property
    def estimated_full_rto_seconds(self) -> float:
        """The RTO scaled from the sample to every key (by key count, removed
        keys included: an upper estimate where many keys are removed)."""
        if self.sample >= 1 or not self.selected:
            return self.rto_seconds
        return self.rto_seconds * self.keys / self.selected

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "ok": self.ok,
            "sample": self.sample,
            "seed": self.seed,
            "keys": self.keys,
            "selected": self.selected,
            "objects": self.objects,
            "bytes": self.bytes,
            "latest_bytes": self.latest_bytes,
            "removed": self.removed,
            "checked_files": self.checked_files,
            "checked_bytes": self.checked_bytes,
            "rto_seconds": round(self.rto_seconds, 6),
            "estimated_full_rto_seconds": round(self.estimated_full_rto_seconds, 6),
            "check_seconds": round(self.check_seconds, 6),
            "started_at": self.started_at,
            "problems": [p.to_json() for p in self.problems],
        }


def sampled(key: str, sample: float, seed: int) -> tuple[bool, int]:
    """(is ``key`` in the sample, its draw). The draw is a hash of seed and
    key, so a seed selects the same keys whatever the listing order."""
    raw = seed.to_bytes(8, "big") + key.encode("utf-8", "surrogatepass")
    draw = int.from_bytes(blake3_digest(raw)[:8], "big")
    return draw < sample * 2**64, draw


async def drill(
    backend: Backend,
    destination: str,
    bucket: str,
    scratch_parent: Path | None = None,
    *,
    sample: float = 1.0,
    seed: int = 0,
    parallel: int = 4,
    progress: Progress | None = None,
) -> DrillReport:
    """Restore the latest versions (or a sample) into a new directory under
    ``scratch_parent`` (default: the system's temporary directory), check
    them back, and remove the directory."""
    report = DrillReport(destination, sample, seed, started_at=time.time())
    scratch = Path(tempfile.mkdtemp(prefix="replicator-drill-", dir=scratch_parent))
    run = _Run(backend, bucket, scratch, report, parallel, progress or NoProgress())
    started = time.monotonic()
    try:
        summary = await (run.everything() if sample >= 1 else run.sample())
        report.rto_seconds = time.monotonic() - started
        report.objects, report.bytes = summary.objects, summary.bytes
        report.removed = len(summary.removed)
        report.problems.extend(summary.errors)
        checked = time.monotonic()
        await run.check_tree()
        report.check_seconds = time.monotonic() - checked
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    if not report.problems and report.objects == 0:
        report.problems.append(
            Problem("", "", f"nothing to drill: no live object versions at {destination!r}")
        )
    return report


@dataclass(slots=True)
class _Run:
    backend: Backend
    bucket: str
    scratch: Path
    report: DrillReport
    parallel: int
    progress: Progress
    manifests: ManifestStore = field(init=False)

    def __post_init__(self) -> None:
        self.manifests = manifests_of(self.backend)

    async def everything(self) -> RestoreSummary:
        # Exactly what `replicator restore --prefix ''` runs.
        selection = Selection(self.bucket, "", False, None)
        summary = await restore(
            self.backend, selection, self.scratch, parallel=self.parallel, progress=self.progress
        )
        # A damaged segment's problem names no key (what it held is unknown).
        failed = sum(1 for p in summary.errors if p.key)
        self.report.keys = summary.objects + len(summary.removed) + failed
        self.report.selected = self.report.keys
        return summary

    async def sample(self) -> RestoreSummary:
        """Restore the sampled keys, ``parallel`` keys at a time."""
        summary = RestoreSummary()

        async def restore_key(key: str) -> None:
            one = Selection(self.bucket, key, True, None)
            got = await restore(
                self.backend, one, self.scratch, parallel=1, progress=self.progress,
                damage_check=False,
            )  # fmt: skip
            summary.objects += got.objects
            summary.bytes += got.bytes
            summary.errors.extend(got.errors)

        # Damaged segments once for the whole drill, not once per key drawn.
        segments = await damaged_segments(self.manifests, self.bucket)
        await run_workers(self._sampled_keys(), restore_key, self.parallel)
        summary.errors.extend(map(_unreadable, segments))
        return summary

    async def _sampled_keys(self) -> AsyncIterator[str]:
        """Sampled keys whose latest version is live (only those manifests
        are read: sampling costs a listing, not a GET per key); at least one
        when the sample drew none (a drill that restores nothing proves
        nothing): the live key of lowest draw among the first few."""
        report = self.report
        live = 0
        spare: list[tuple[int, str, VersionEntry]] = []
        async for key, versions in self.manifests.list_versions(self.bucket):
            latest = versions[-1]  # oldest first
            report.keys += 1
            chosen, draw = sampled(key, report.sample, report.seed)
            if chosen:
                report.selected += 1
                if await self._live(latest):
                    live += 1
                    yield key
            elif live == 0:
                spare = sorted([*spare, (draw, key, latest)])[:SPARE_KEYS]
        for _draw, key, latest in spare if live == 0 else ():
            if await self._live(latest):
                report.selected += 1
                yield key
                return

    async def _live(self, entry: VersionEntry) -> bool:
        manifest = await read_manifest(self.manifests, entry)
        if manifest.removed:
            self.report.removed += 1
            return False
        self.report.latest_bytes += manifest.identity.size
        return True

    async def check_tree(self) -> None:
        """Every restored file against its manifest, read back from disk; and
        no file in the tree that the restore did not account for. Memory is
        constant: files are counted, never collected."""
        async for key, versions in self.manifests.list_versions(self.bucket):
            try:
                path, is_dir = target_path(self.scratch, key)
            except UnsafeKeyError:
                continue  # the restore refused it and reported it already
            if not is_dir and await asyncio.to_thread(path.is_file):
                await self._check_file(versions, path)
        on_disk = await asyncio.to_thread(_count_files, self.scratch)
        if on_disk != self.report.checked_files:
            extra = on_disk - self.report.checked_files
            self.report.problems.append(
                Problem("", "", f"{extra} files in the restored tree match no restored key")
            )

    async def _check_file(self, versions: list[VersionEntry], path: Path) -> None:
        """The file must be the bytes of one of the key's versions: the one
        restored was the newest then, but the daemon may have stored a newer
        one since (drills run beside it). Newest first, so one manifest is
        read in the usual case."""
        size, digest = await asyncio.to_thread(_hash_file, path)
        self.report.checked_files += 1
        self.report.checked_bytes += size
        for entry in reversed(versions):
            manifest = await read_manifest(self.manifests, entry)
            if not manifest.removed and (manifest.identity.size, manifest.digest) == (size, digest):
                return
        newest = versions[-1]
        self.report.problems.append(
            Problem(
                newest.key,
                newest.version_name,
                f"restored file ({size} bytes) matches no version's length and BLAKE3",
            )
        )


def _unreadable(seg: Damaged) -> Problem:
    held = "which manifests it held is unknown" if seg.held is None else (
        f"the {len(seg.held)} manifests its header lists cannot be restored from it"
    )  # fmt: skip
    return Problem("", "", f"segment {seg.segment} could not be read ({seg.why}): {held}")


def _count_files(root: Path) -> int:
    return sum(len(names) for _dir, _dirs, names in os.walk(root))


def _hash_file(path: Path) -> tuple[int, bytes]:
    hasher = StreamChunker()
    size = 0
    with path.open("rb") as f:
        while data := f.read(CHECK_READ):
            hasher.feed(data)
            size += len(data)
    return size, hasher.finish().digest or b""


__all__ = ["DrillReport", "drill", "sampled"]
