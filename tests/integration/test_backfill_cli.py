"""``replicator backfill`` as operators run it, and what restore makes of it."""

from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner

from replicator.cli import main
from replicator.config import Settings
from replicator.origins import ObjectVersion
from replicator.origins.fs import Contents, FsOrigin, FsReader
from replicator.pipeline.backfill import SUPERSEDED_TRIES, Backfill
from replicator.store.backends import FsBackend
from replicator.store.peer import close_peers, open_peers
from tests.integration.test_backfill import MIB, manifests_at, settings_for, write_tree


def _config(tmp: Path, compression: str = "none") -> Path:
    cfg = tmp / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp / "src"}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp / "a"}"\n\n'
        f'[[destinations]]\nname = "b"\ntype = "fs"\npath = "{tmp / "b"}"\n\n'
        f'[store]\ncache_dir = "{tmp / "cache"}"\ncompression = "{compression}"\n'
    )
    return cfg


def test_cli_json_summary_and_restore_round_trip(tmp_path: Path) -> None:
    files = {"m/w.bin": os.urandom(MIB + 7), "m/w2.bin": os.urandom(300), "z": b""}
    write_tree(tmp_path / "src", files)
    cfg = _config(tmp_path)
    run = CliRunner().invoke(main, ["backfill", "--config", str(cfg), "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    for field in ("objects", "source_bytes", "shipped_bytes", "deduplicated_bytes"):
        assert field in summary
    assert summary["objects"] == 3 and summary["superseded"] == 0 and summary["errors"] == 0
    assert summary["shipped_bytes"] == {"a": MIB + 307, "b": MIB + 307}
    assert set(summary["put_requests"]) == {"a", "b"}
    assert summary["elapsed_seconds"] >= 0

    # The read path (restore) rebuilds the tree byte for byte from each peer.
    for peer in ("a", "b"):
        out = tmp_path / f"restored-{peer}"
        args = ["restore", "--config", str(cfg), "--destination", peer, "--prefix", "", "--to"]
        restored = CliRunner().invoke(main, [*args, str(out)])
        assert restored.exit_code == 0, restored.output
        cmp = filecmp.dircmp(tmp_path / "src", out)
        assert not cmp.left_only and not cmp.right_only
        for rel, data in files.items():
            assert (out / rel).read_bytes() == data

    human = CliRunner().invoke(main, ["backfill", "--config", str(cfg)])
    assert human.exit_code == 0 and "3 unchanged" in human.stdout
    print(f"cli: {summary['objects']} objects, shipped {summary['shipped_bytes']}, restored x2")


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[source]\ntype = "fs"\npath = "/x"\n[store]\npack_size = 1\n')
    run = CliRunner().invoke(main, ["backfill", "--config", str(bad)])
    assert run.exit_code == 2
    assert "store.pack_size" in run.output or "destinations" in run.output


class VanishingOrigin(FsOrigin):
    """A real FsOrigin; ``victim`` is deleted (or rewritten) right after it is
    opened and its first window read, as a concurrent writer would."""

    def __init__(self, root: Path, victim: str, action: str) -> None:
        super().__init__(root)
        self.victim = victim
        self.action = action
        self.reads = 0  # of the victim, each through open()

    async def read_many(self, objs: Sequence[ObjectVersion]) -> Contents:
        """Vouches for none in a batch: every file goes through ``open``,
        where the concurrent writer strikes. (A batch read of the victim
        before its ctime left the racy window made the outcome timing's.)"""
        return [None] * len(objs)

    async def open(self, obj: ObjectVersion) -> FsReader:
        if obj.key == self.victim and self.action == "delete-before-open":
            (self.root / obj.key).unlink(missing_ok=True)
        reader = await super().open(obj)
        self.reads += obj.key == self.victim
        if obj.key == self.victim and self.action == "rewrite-while-reading":
            self._rewrite(obj)
        return reader

    def _rewrite(self, obj: ObjectVersion) -> None:
        with (self.root / obj.key).open("r+b") as f:
            f.write(b"changed!")
        st = os.stat(self.root / obj.key)
        os.utime(self.root / obj.key, ns=(st.st_atime_ns, obj.event_time_ns + 1))


async def test_superseded_objects_are_retried_then_reported(tmp_path: Path) -> None:
    """A file deleted before it is read is superseded (not an error); one
    rewritten during every read is tried SUPERSEDED_TRIES times, then
    reported as an error (exit 1), never a silent success."""
    expected = {"delete-before-open": (3, 1, 0), "rewrite-while-reading": (3, 0, 1)}
    for action in ("delete-before-open", "rewrite-while-reading"):
        tmp = tmp_path / action
        write_tree(tmp / "src", {f"f{i}": os.urandom(200_000) for i in range(4)})
        settings: Settings = settings_for(tmp, peers=1)
        peers = await open_peers(settings, create=True)
        origin = VanishingOrigin(tmp / "src", "f1", action)
        job = Backfill(origin, peers, settings.chunking.params(), settings.store)
        summary = await job.run()
        await close_peers(peers)
        outcome = (summary.replicated, summary.superseded, summary.errors)
        assert outcome == expected[action], summary.error_samples
        if action == "rewrite-while-reading":
            assert "'f1': changed on each of 3 reads" in summary.error_samples[0]
            assert origin.reads == SUPERSEDED_TRIES
        held = await manifests_at(FsBackend(tmp / "peer0", "p"))
        assert sorted(held) == ["f0", "f2", "f3"], "a superseded version is never recorded"
        print(f"{action}: (replicated, superseded, errors) = {outcome}")


def test_cli_zstd_store_restores_byte_for_byte(tmp_path: Path) -> None:
    lines = b"".join(b'{"step": %d, "loss": 0.%d}\n' % (i, i % 97) for i in range(60000))
    files = {"logs/train.jsonl": lines, "w.bin": os.urandom(200_000)}
    write_tree(tmp_path / "src", files)
    cfg = _config(tmp_path, compression="zstd")
    run = CliRunner().invoke(main, ["backfill", "--config", str(cfg), "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    total = len(lines) + 200_000
    assert summary["shipped_bytes"]["a"] == total
    assert summary["stored_bytes"]["a"] < 200_000 + len(lines) // 4
    out = tmp_path / "restored"
    args = ["restore", "--config", str(cfg), "--destination", "b", "--prefix", "", "--to"]
    restored = CliRunner().invoke(main, [*args, str(out)])
    assert restored.exit_code == 0, restored.output
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    print(f"zstd: {total} bytes shipped as {summary['stored_bytes']['a']} stored; restored")
