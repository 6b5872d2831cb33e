"""verify asks a store that keeps many manifests per object (format 3) for
what its layout can get wrong (``audit()``), and reports each finding as a
problem; a format 1/2 store has nothing of the kind to ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replicator.store.backends import FsBackend
from replicator.store.manifest_store import ObjectManifests
from replicator.verify import verify
from tests.integration.store_builder import StoreBuilder


@dataclass(frozen=True)
class Finding:
    """The shape of segment_store.SegmentProblem."""

    segment: str
    message: str
    key: str = ""
    version: str = ""


class Audited(ObjectManifests):
    """A real directory store whose layout reports fixed findings."""

    def __init__(self, backend: FsBackend, findings: list[Finding]) -> None:
        super().__init__(backend)
        self.findings = findings

    async def audit(self) -> list[Finding]:
        return self.findings


async def test_audit_findings_are_problems_within_the_prefix(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "peer")
    builder = StoreBuilder(backend)
    await builder.init()
    await builder.put("ckpt/a", b"abc" * 100, 10)
    clean = await verify(backend, builder.bucket, None)
    assert clean.ok and clean.manifests == 1
    findings = [
        Finding("segments/b/ab/ab01", "header unreadable: truncated"),
        Finding(
            "segments/b/cd/cd02 segments/b/ef/ef03",
            "two different manifests (segments/b/cd/cd02, segments/b/ef/ef03)",
            "ckpt/a",
            "v1",
        ),
        Finding("segments/b/01/0101", "two different manifests", "other/x", "v2"),
    ]
    store = Audited(backend, findings)
    everything = await verify(backend, builder.bucket, None, manifests=store)
    assert [(p.key, p.version) for p in everything.problems] == [
        ("", ""),
        ("ckpt/a", "v1"),
        ("other/x", "v2"),
    ]
    assert (
        everything.problems[0].message == "segment segments/b/ab/ab01: header unreadable: truncated"
    )
    assert everything.problems[1].message == findings[1].message  # names its segments already
    scoped = await verify(backend, builder.bucket, "ckpt/", manifests=store)
    assert [p.key for p in scoped.problems] == ["", "ckpt/a"] and scoped.manifests == 1
