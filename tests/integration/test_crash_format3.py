"""Crash-point sweep of a backfill to format 3 peers (manifests in segments):
the process dies at each failpoint of the write path, including between a
segment's synced file and its link; every peer stays consistent, a re-run
completes with exactly one version per object, and a third run writes
nothing. The peers are read back by a reader written here from
docs/store-format.md §13, not by replicator's segment code."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from replicator import failpoints
from replicator.store.backends import FsBackend
from replicator.store.format import PACKS, index_key, pack_key
from tests.integration.peer_reader import segment_manifests
from tests.integration.test_backfill import rebuild, write_tree
from tests.integration.test_crash import CRASH_POINTS, _backfill, _config, _count, _verify_clean

pytestmark = pytest.mark.integration


async def check_peer(backend: FsBackend) -> dict[str, bytes]:
    """No manifest names a missing pack or index; the newest bytes of each key."""
    packs = {i.key async for i in backend.list(PACKS)}
    indexes = {i.key async for i in backend.list("index/")}
    live = {}
    for key, versions in (await segment_manifests(backend)).items():
        for m in versions.values():
            assert all(pack_key(p) in packs and index_key(p) in indexes for p in m.packs()), key
        newest = versions[max(versions)]
        live[key] = await rebuild(backend, newest)
    return live


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_of_a_format_3_backfill_leaves_peers_consistent(tmp_path: Path, point: str) -> None:
    tree = {f"obj-{i}": os.urandom(300_000 + i) for i in range(5)}
    write_tree(tmp_path / "src", tree)
    cfg = _config(tmp_path, format_version=3)

    crashed = _backfill(cfg, point)
    assert crashed.returncode == failpoints.CRASH_EXIT, crashed.stderr
    segments = sum(asyncio.run(_count(tmp_path / p, "segments/")) for p in "ab")
    assert not any((tmp_path / p / "manifests").exists() for p in "ab")
    for peer in "ab":
        asyncio.run(check_peer(FsBackend(tmp_path / peer, peer)))
        _verify_clean(cfg, peer)
    if point in (failpoints.BEFORE_MANIFEST_PUT, failpoints.GROUP_COMMIT_BEFORE_LINK):
        assert segments == 0  # died at the first group commit: nothing named
    elif point == failpoints.AFTER_MANIFEST_PUT:
        assert segments >= 1

    rerun = _backfill(cfg)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["errors"] == 0 and summary["objects"] == len(tree)
    for peer in "ab":
        backend = FsBackend(tmp_path / peer, peer)
        assert asyncio.run(check_peer(backend)) == tree
        versions = asyncio.run(segment_manifests(backend))
        assert {k: len(v) for k, v in versions.items()} == dict.fromkeys(tree, 1)
        _verify_clean(cfg, peer)
    third = json.loads(_backfill(cfg).stdout)
    assert third["put_requests"] == {"a": 0, "b": 0}
    print(
        f"format 3, crash at {point}: {segments} segments left behind; re-run "
        f"{summary['put_requests']} PUTs; {len(tree)} objects at 2 peers, one version each; "
        "third run 0 PUTs"
    )
