"""A damaged format 3 segment on a real directory peer: what the store tells
readers about it (``damaged``: name, why, and the versions a readable header
lists), and what a writer does when a group commit has the damaged
segment's own name (the very manifests it held): it replaces the damaged
bytes instead of answering "present" for versions nobody can read."""

from __future__ import annotations

from pathlib import Path

from replicator.store.backends import FsBackend
from replicator.store.segment_store import segment_store
from replicator.store.segments import encode, parse
from tests.unit.test_segment_store import V3, manifest


async def test_a_replayed_commit_over_its_damaged_segment_rewrites_it(tmp_path: Path) -> None:
    ms = [manifest("a"), manifest("b")]
    seg = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes()) for m in ms])
    (tmp_path / seg.name).parent.mkdir(parents=True)
    (tmp_path / seg.name).write_bytes(b"garbage over the segment")
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    (found,) = await store.damaged("bkt")
    assert (found.segment, found.bucket, found.held) == (seg.name, "bkt", None)
    assert await store.damaged("other") == []
    # The held check finds nothing readable; the commit has the segment's name.
    assert await store.put_many(ms) == [True, True]
    parse((tmp_path / seg.name).read_bytes(), seg.name)  # its own bytes again
    fresh = segment_store(FsBackend(tmp_path, "peer"), V3)
    assert [e.key async for e in fresh.entries("bkt")] == ["a", "b"]
    assert await fresh.damaged() == []
    # A replay over the healthy segment is answered "present", nothing written.
    assert await fresh.put_many(ms) == [False, False]


async def test_a_readable_header_names_what_the_damaged_segment_held(tmp_path: Path) -> None:
    ms = [manifest("a"), manifest("b"), manifest("c")]
    seg = encode("bkt", [(m.identity.key, m.version_name, m.to_bytes()) for m in ms])
    broken = bytearray(seg.data)
    broken[-3] ^= 1  # in entry c
    (tmp_path / seg.name).parent.mkdir(parents=True)
    (tmp_path / seg.name).write_bytes(bytes(broken))
    store = segment_store(FsBackend(tmp_path, "peer"), V3)
    (found,) = await store.damaged()
    assert found.held == tuple((m.identity.key, m.version_name) for m in ms)
    assert "do not hash to its name" in found.why and not found.why.startswith("segment ")
    (problem,) = await store.audit()
    assert "its header lists 3 manifests (key 'a' version" in problem.message, problem.message
