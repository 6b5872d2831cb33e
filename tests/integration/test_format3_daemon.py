"""The daemon (`replicator run`) on format 3 peers: changes and a removal
reach both peers as segments (no manifest object per key), the peers are
read back by an independent segment reader, and restore gives the source."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from pathlib import Path

import pytest

from replicator.store.backends import FsBackend
from tests.daemon.harness import Daemon, replicator, source_state, wait_until, write_config
from tests.integration.peer_reader import segment_manifests
from tests.integration.store_builder import tree
from tests.integration.test_crash_format3 import check_peer

pytestmark = pytest.mark.integration
PEERS = ("a", "b")


def _peer(tmp: Path, name: str) -> dict[str, bytes]:
    if not (tmp / name / "config").exists():
        return {}
    return asyncio.run(check_peer(FsBackend(tmp / name, name)))


def _live(tmp: Path, name: str) -> dict[str, bytes]:
    """The newest bytes per key, tombstoned keys left out."""
    if not (tmp / name / "config").exists():
        return {}
    versions = asyncio.run(segment_manifests(FsBackend(tmp / name, name)))
    removed = {k for k, vs in versions.items() if vs[max(vs)].removed}
    return {k: v for k, v in _peer(tmp, name).items() if k not in removed}


def test_the_daemon_writes_segments_that_restore_to_the_source(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[store]\n", "[store]\nformat_version = 3\n"))
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        want = _changes(src, tmp_path, daemon)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        if daemon.proc.poll() is None:  # a failure above: never leak the process
            daemon.kill()

    segments = []
    for peer in PEERS:
        assert not (tmp_path / peer / "manifests").exists()
        segments.append(sum(1 for p in (tmp_path / peer / "segments").rglob("*") if p.is_file()))
        out = tmp_path / f"restored-{peer}"
        done = _restore(cfg, peer, out)
        assert done.returncode == 0, done.stderr
        assert tree(out) == want
    print(f"31 files and a removal by the daemon: {segments} segments at peers a, b")


def _changes(src: Path, tmp: Path, daemon: Daemon) -> dict[str, bytes]:
    """31 new files, then one removed; the source state both peers reach."""
    rng = random.Random(3)
    for i in range(30):
        path = src / f"d{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(100, 40_000)))
    (src / "gone.txt").write_bytes(b"short-lived")
    wait_until(lambda: all("gone.txt" in _live(tmp, p) for p in PEERS), "first copy", daemon)
    os.remove(src / "gone.txt")
    want = source_state(src)
    wait_until(lambda: all(_live(tmp, p) == want for p in PEERS), "the removal", daemon)
    return want


def _restore(cfg: Path, peer: str, out: Path) -> subprocess.CompletedProcess[str]:
    args = ["--config", str(cfg), "--destination", peer, "--prefix", "", "--to", str(out)]
    return replicator("restore", *args)
