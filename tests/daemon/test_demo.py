"""``replicator demo`` end to end (a short run), and its checker failing on
the damage it exists to find.

The demo starts the real daemon as a child process; the run here is short
(a few seconds of training) but goes through every step: start-up, live
polling, drain, SIGTERM, per-version restore from both peers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import config
from replicator.demo.check import check_peers
from replicator.demo.job import SHARD, load_log
from replicator.store.peer import close_peers, open_peers

MAIN = "from replicator.cli import main; main()"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run(
        [sys.executable, "-c", MAIN, "demo", "--duration", "6", "--keep", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    print("demo summary:", json.dumps(summary, indent=1))
    return root, summary


def test_demo_exits_0_with_every_version_restored(demo_run: tuple[Path, dict[str, object]]) -> None:
    root, summary = demo_run
    assert summary["ok"] is True
    assert summary["problems"] == []
    peers = summary["peers"]
    assert isinstance(peers, list)
    assert [p["peer"] for p in peers] == ["peer-a", "peer-b"]
    versions = load_log(root / "versions.jsonl")
    written = [v for v in versions if not v.removed]
    assert len(written) == summary["versions_written"]
    for peer in peers:
        assert peer["versions_restored"] >= 1
        assert peer["tombstones"] >= 1  # old checkpoints were deleted
        # Frozen tensors and the repeated latest.safetensors are not re-sent.
        assert 0 < peer["ratio"] < 1
    assert (root / "daemon.log").read_text().count('"event": "durable"') >= 2


def _check(root: Path) -> list[str]:
    settings = config.load(root / "replicator.toml")
    checks = asyncio.run(check_peers(settings, load_log(root / "versions.jsonl"), root / "x"))
    return [p for c in checks for p in c.problems]


def test_checker_finds_a_kept_copy_that_differs(demo_run: tuple[Path, dict[str, object]]) -> None:
    root, _ = demo_run
    shard = next(v for v in load_log(root / "versions.jsonl") if v.key == SHARD)
    assert shard.kept is not None
    original = shard.kept.read_bytes()
    try:
        shard.kept.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        problems = _check(root)
    finally:
        shard.kept.write_bytes(original)
    assert any(p.startswith(SHARD) and "differ" in p for p in problems), problems
    assert len({p.split(":")[0].split(" @")[0] for p in problems}) == 1


def test_checker_finds_a_missing_newest_version(demo_run: tuple[Path, dict[str, object]]) -> None:
    root, _ = demo_run

    async def newest_shard_manifest() -> Path:
        """The object holding the newest shard manifest at peer-b: its own
        file (format 2), or the segment that holds it (format 3, the default:
        removing it takes other versions too, the shard's newest among them)."""
        peers = await open_peers(config.load(root / "replicator.toml"), create=False)
        try:
            [peer] = [p for p in peers if p.name == "peer-b"]
            async for key, entries in peer.manifests.list_versions("demo", SHARD, exact=True):
                assert key == SHARD
                where = entries[-1].where
                return root / "peer-b" / (entries[-1].store_key if where is None else where[0])
        finally:
            await close_peers(peers)
        raise AssertionError("no shard manifest at peer-b")

    manifest = asyncio.run(newest_shard_manifest())
    saved = manifest.read_bytes()
    os.unlink(manifest)
    try:
        problems = _check(root)
    finally:
        manifest.write_bytes(saved)
    assert any(p.startswith(SHARD) and "newest" in p for p in problems), problems
