"""Crash-point sweep of backfill: the process dies (os._exit(137), as under
SIGKILL) at each named failpoint of the write path; every peer must stay
consistent (no manifest names a missing pack or index), and a re-run must
complete, leaving exactly one manifest per object version at every peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import failpoints
from replicator.store.backends import FsBackend
from replicator.store.format import MANIFESTS, PACKS
from tests.integration.test_backfill import (
    MIB,
    check_structure,
    fs_probe_requests,
    manifests_at,
    write_tree,
)

#: The installed entry point, without relying on the venv's bin/ being on PATH.
_MAIN = "from replicator.cli import main; main()"

CRASH_POINTS = [
    failpoints.AFTER_PACK_PUT,
    failpoints.BEFORE_INDEX_PUT,
    failpoints.BEFORE_MANIFEST_PUT,
    failpoints.GROUP_COMMIT_BEFORE_LINK,
    failpoints.AFTER_MANIFEST_PUT,
]


def _config(tmp: Path, format_version: int = 2) -> Path:
    """Format 2 unless asked: this sweep counts manifests/ objects (the format 3
    sweep, test_crash_format3.py, counts segments)."""
    cfg = tmp / "replicator.toml"
    cfg.write_text(
        f"""
[source]
type = "fs"
path = "{tmp / "src"}"

[[destinations]]
name = "a"
type = "fs"
path = "{tmp / "a"}"

[[destinations]]
name = "b"
type = "fs"
path = "{tmp / "b"}"

[chunking]
min_size = 4096
avg_size = 16384
max_size = 65536

[store]
pack_size = {MIB}
concurrency = 3
cache_dir = "{tmp / "cache"}"
format_version = {format_version}
"""
    )
    return cfg


def _backfill(cfg: Path, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REPLICATOR_FAILPOINT": failpoint}
    return subprocess.run(
        [sys.executable, "-c", _MAIN, "backfill", "--config", str(cfg), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,  # a hang guard only (a stuck run must fail, not block CI)
    )


def _verify_clean(cfg: Path, peer: str) -> None:
    """``replicator verify --deep`` exits 0: packs left unreferenced by the
    crash are reported as info, never as problems."""
    done = subprocess.run(
        [sys.executable, "-c", _MAIN, "verify", "--config", str(cfg), "--destination", peer,
         "--deep", "--json"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


async def _count(root: Path, prefix: str) -> int:
    backend = FsBackend(root, "peer")
    return len([i async for i in backend.list(prefix)])


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_at_failpoint_leaves_peers_consistent_and_rerun_completes(
    tmp_path: Path, point: str
) -> None:
    shared = os.urandom(2 * MIB)
    tree = {f"obj-{i}": os.urandom(600_000 + i) for i in range(6)}
    # No empty object here: its manifest names no pack and would be written
    # first, hiding the pack -> manifest ordering this sweep is about.
    tree |= {"copy-1": shared, "copy-2": shared}
    write_tree(tmp_path / "src", tree)
    cfg = _config(tmp_path)

    crashed = _backfill(cfg, point)
    assert crashed.returncode == failpoints.CRASH_EXIT, crashed.stderr
    packs = asyncio.run(_count(tmp_path / "a", PACKS)) + asyncio.run(_count(tmp_path / "b", PACKS))
    manifests = sum(asyncio.run(_count(tmp_path / p, MANIFESTS)) for p in "ab")
    for peer in "ab":
        # The invariant: whatever manifests exist name only stored packs/indexes.
        asyncio.run(check_structure(FsBackend(tmp_path / peer, peer)))
        _verify_clean(cfg, peer)
    assert packs >= 1
    if point in (failpoints.BEFORE_MANIFEST_PUT, failpoints.GROUP_COMMIT_BEFORE_LINK):
        assert manifests == 0  # died at the very first manifest (or batch of them)
    elif point == failpoints.AFTER_MANIFEST_PUT:
        assert manifests >= 1  # manifests go to both peers concurrently

    rerun = _backfill(cfg)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["errors"] == 0 and summary["objects"] == len(tree)
    for peer in "ab":
        backend = FsBackend(tmp_path / peer, peer)
        assert asyncio.run(check_structure(backend)) == tree
        versions = asyncio.run(manifests_at(backend))
        assert {k: len(v) for k, v in versions.items()} == dict.fromkeys(tree, 1)
        _verify_clean(cfg, peer)

    third = json.loads(_backfill(cfg).stdout)
    assert third["put_requests"] == {"a": 0, "b": 0}
    print(
        f"crash at {point}: {packs} packs and {manifests} manifests left behind; "
        f"re-run shipped {summary['shipped_bytes']} with {summary['put_requests']} PUTs, "
        f"{len(tree)} objects verified at 2 peers; third run 0 PUTs (put_requests excludes "
        f"each peer's start-up probe: {asyncio.run(fs_probe_requests(tmp_path / 'probe'))} "
        "requests on its own test objects)"
    )
