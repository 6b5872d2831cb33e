"""Check a replica store: every manifest against the packs and indexes it
references (structural), and optionally the bytes themselves (deep).

Structural: every manifest parses and is stored under its own name; every
referenced pack exists (one HEAD per pack) and is long enough for every run;
every chunk sits in the pack's index at the offset and length the manifest
says. Deep: additionally fetch every chunk of the (sampled) manifests,
re-hash it, and check the whole-object BLAKE3. The checks of one manifest
are in ``verify_manifest.py``; this module runs them over the store, adds
what the store's layout can get wrong (``audit``), and reports.

Without a key prefix the whole store is checked and packs that no manifest
references are reported as information (garbage from an interrupted writer,
or a writer in progress), never as errors.

Chunks that ``repair`` relocated are checked at their new place (see
``store/quarantine.py``); every damaged chunk copy found is recorded in the
peer's ``quarantine/`` (best effort: a read-only credential only loses the
record, not the finding), so no writer deduplicates onto it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator.errors import ReplicatorError
from replicator.restore import NoProgress, Progress
from replicator.store.backend import Backend
from replicator.store.format import INDEX, PACKS
from replicator.store.manifest_store import ManifestStore, manifest_store
from replicator.store.quarantine import DamageMap, Findings, quarantine
from replicator.store.reader import Problem, VersionEntry, read_store_config
from replicator.verify_manifest import INDEX_CACHE, Checker, Packs, not_in_index
from replicator.workers import WorkerPool

# Packs and not_in_index are imported from here by repair_segments.
__all__ = ["INDEX_CACHE", "Packs", "VerifyReport", "not_in_index", "verify"]


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
    checker = Checker(
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
    checker: Checker,
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


def _hex_name(store_key: str) -> bytes | None:
    try:
        return bytes.fromhex(store_key.rsplit("/", 1)[-1])
    except ValueError:
        return None
