"""The streaming comparison (source listing vs a peer's manifests), its
external sort, and the removal plan with its mass-deletion guard, over a
real directory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams
from replicator.origins import ObjectVersion
from replicator.origins.fs import FsOrigin
from replicator.pipeline.compare import (
    ListingOrderError,
    compare,
    key_bytes,
    peer_keys,
    sorted_by_key,
)
from replicator.pipeline.manifests import put_manifest, tombstone
from replicator.pipeline.reconcile import same_version
from replicator.pipeline.removals import (
    TOMBSTONE_BATCH,
    MassDeletionRefused,
    apply_removals,
    check_removals,
    plan_removals,
    removal_refusal,
)
from replicator.store.backends import FsBackend
from replicator.store.bulk import PutItem, PutOutcome
from replicator.store.format import Manifest, SourceIdentity

PARAMS = ChunkerParams(256, 1024, 4096)
# Keys whose escaped names sort differently from the keys themselves.
KEYS = ["a", "a b", "a!", "a-", "a/b", "a0", "é", "\udcff", "z\nnewline"]


async def _aiter(items: Iterable[ObjectVersion]) -> AsyncIterator[ObjectVersion]:
    for item in items:
        yield item


def _listing(keys: Iterable[str]) -> list[ObjectVersion]:
    return [ObjectVersion(k, 1, 10) for k in sorted(keys, key=key_bytes)]


async def _peer_with(root: Path, keys: Iterable[str], removed: Iterable[str] = ()) -> FsBackend:
    backend = FsBackend(root, "peer")
    for k in keys:
        m = Manifest(SourceIdentity("fs", "src", k, "", "e", 1, 10), False, b"\0" * 32, PARAMS)
        await put_manifest(backend, m)
    for k in removed:
        await put_manifest(
            backend, tombstone(SourceIdentity("fs", "src", k, "", "", 0, 20), PARAMS)
        )
    return backend


@given(st.lists(st.tuples(st.text(max_size=6), st.text(max_size=3)), max_size=60))
def test_external_sort_equals_sorted(items: list[tuple[str, str]]) -> None:
    async def gen() -> AsyncIterator[tuple[str, str]]:
        for i in items:
            yield i

    async def run() -> list[tuple[str, str]]:
        return [x async for x in sorted_by_key(gen(), run_size=7)]

    got = asyncio.run(run())
    assert [key_bytes(k) for k, _ in got] == sorted(key_bytes(k) for k, _ in items)
    assert sorted(got) == sorted(items)


async def test_compare_pairs_every_key_once_despite_escaped_listing_order(tmp_path: Path) -> None:
    backend = await _peer_with(tmp_path, KEYS[:6])
    source = _listing(KEYS[3:])
    pairs = [p async for p in compare(_aiter(source), peer_keys(backend, "src", ""))]
    assert [p.key for p in pairs] == sorted(KEYS, key=key_bytes)
    both = {p.key for p in pairs if p.source is not None and p.peer is not None}
    assert both == set(KEYS[3:6])
    assert {p.key for p in pairs if p.source is None} == set(KEYS[:3])
    assert {p.key for p in pairs if p.peer is None} == set(KEYS[6:])


async def test_an_unordered_source_listing_is_refused(tmp_path: Path) -> None:
    backend = await _peer_with(tmp_path, ["a"])
    source = [ObjectVersion("b", 1, 1), ObjectVersion("a", 1, 1)]
    with pytest.raises(ListingOrderError, match="'a'"):
        _ = [p async for p in compare(_aiter(source), peer_keys(backend, "src", ""))]


async def test_removal_plan_counts_live_keys_and_the_guard_refuses(tmp_path: Path) -> None:
    keys = [f"k{i:02d}" for i in range(20)]
    backend = await _peer_with(tmp_path, keys, removed=["gone"])
    # 3 of 20 live keys no longer listed: 15 % > 10 %.
    plan = await plan_removals(backend, "peer", _aiter(_listing(keys[3:])), "src", "")
    assert (plan.listed, plan.live, plan.count) == (17, 20, 3)
    why = removal_refusal(plan, 0.1, allow=False)
    assert why is not None and "3 of 20 live keys" in why and "'peer'" in why
    with pytest.raises(MassDeletionRefused):
        check_removals(plan, 0.1, allow=False)
    assert removal_refusal(plan, 0.2, allow=False) is None
    assert removal_refusal(plan, 0.1, allow=True) is None
    assert await apply_removals(backend, plan, source_id="fs", bucket="src", params=PARAMS) == 3
    again = await plan_removals(backend, "peer", _aiter(_listing(keys[3:])), "src", "")
    assert (again.live, again.count) == (17, 0), "tombstoned keys are not live"
    again.discard()


async def test_an_empty_source_never_tombstones_without_allow(tmp_path: Path) -> None:
    backend = await _peer_with(tmp_path, ["only"])
    plan = await plan_removals(backend, "peer", _aiter([]), "src", "")
    why = removal_refusal(plan, 1.0, allow=False)
    assert why is not None and "listed no object" in why and "1 live keys" in why
    plan.discard()


def test_same_version_compares_size_ctime_mtime_and_inode() -> None:
    origin = FsOrigin(Path("/nonexistent"), "src")
    obj = ObjectVersion("k", 5, 100, mtime_ns=50, inode=7)

    def recorded(**kw: int | None) -> Manifest:
        fields: dict[str, int | None] = {
            "size": 5,
            "event_time_ns": 100,
            "mtime_ns": 50,
            "inode": 7,
        }
        f = fields | kw
        ident = SourceIdentity(
            "fs", "src", "k", "", "d", int(f["size"] or 0), int(f["event_time_ns"] or 0),
            mtime_ns=f["mtime_ns"], inode=f["inode"],
        )  # fmt: skip
        return Manifest(ident, False, b"\0" * 32, PARAMS)

    assert same_version(recorded(), origin, obj)
    for changed in ({"size": 6}, {"event_time_ns": 101}, {"mtime_ns": 49}, {"inode": 8}):
        assert not same_version(recorded(**changed), origin, obj), changed
    # Written without a stat (format 1, or an event): size and ctime decide.
    assert same_version(recorded(mtime_ns=None, inode=None), origin, obj)


class _Batches(FsBackend):
    """A directory store that records the size of each batched put."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "peer")
        self.batches: list[int] = []

    async def put_many_if_absent(self, items: Sequence[PutItem]) -> list[PutOutcome]:
        self.batches.append(len(items))
        return await super().put_many_if_absent(items)


async def test_tombstones_are_written_in_group_commits(tmp_path: Path) -> None:
    keys = [f"k{i:04d}" for i in range(TOMBSTONE_BATCH + 3)]
    await _peer_with(tmp_path, keys)
    backend = _Batches(tmp_path)
    plan = await plan_removals(backend, "peer", _aiter([]), "src", "")
    written = await apply_removals(backend, plan, source_id="fs", bucket="src", params=PARAMS)
    assert written == len(keys)
    assert backend.batches == [TOMBSTONE_BATCH, 3], "one group commit per batch, not per key"
    again = await plan_removals(backend, "peer", _aiter([]), "src", "")
    assert (again.live, again.count) == (0, 0)
    again.discard()
