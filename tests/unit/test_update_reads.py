"""An AI-like update (bench compare's workload) reads only the files that
changed: an unchanged file is skipped from the peer's own record (size,
ctime, mtime, inode: borg's files cache), never read, on real files and a
real filesystem peer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from replicator import config
from replicator.bench.trees import AiTree
from replicator.bench.workloads import MiB
from replicator.pipeline.backfill import run_backfill


def _settings(tmp_path: Path, src: Path) -> config.Settings:
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{src}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp_path / "peer"}"\n\n'
        f'[store]\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    return config.load(cfg)


async def test_an_update_reads_only_the_changed_files(tmp_path: Path) -> None:
    tree = AiTree(tmp_path / "src", 4 * MiB, seed=5)
    tree.write_v1()
    settings = _settings(tmp_path, tree.root)
    first = await run_backfill(settings)
    assert first.replicated == 4
    await asyncio.sleep(0.05)  # the files' ctimes past the racy-clean window
    tree.write_v2()
    untouched = (tree.root / "tokenizer.json").stat().st_size
    changed = sum(p.stat().st_size for p in tree.root.rglob("*") if p.is_file()) - untouched
    update = await run_backfill(settings)
    print(update.to_json())
    assert (update.replicated, update.unchanged, update.errors) == (3, 1, 0)
    # Each changed file read once, whole; the unchanged one not at all.
    assert update.source_bytes == changed
    assert update.unchanged_bytes == untouched
