"""The last object of a backfill seals its pack at once (lane_commits.py):
once the listing has ended and nothing else is under way at a lane, no
object could fill the open pack. Its commit used to wait the finishing
delay (``service.FINISH_SEAL_SECONDS``, 50 ms) on every run: an update's
last changed file, a first copy's last large file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from replicator import config
from replicator.pipeline import service
from replicator.pipeline.backfill import run_backfill


def _settings(tmp_path: Path, src: Path) -> config.Settings:
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{src}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{tmp_path / "peer"}"\n\n'
        f'[store]\ncache_dir = "{tmp_path / "cache"}"\n'
    )
    return config.load(cfg)


async def test_the_last_object_does_not_wait_for_the_finishing_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A delay no run could hide: the old commit waited all of it.
    monkeypatch.setattr(service, "FINISH_SEAL_SECONDS", 60.0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # not a batched small file
    await asyncio.sleep(0.05)  # the file's ctime past the racy-clean window
    started = time.monotonic()
    summary = await asyncio.wait_for(run_backfill(_settings(tmp_path, src)), timeout=20)
    print(f"backfill of one 3 MiB file: {time.monotonic() - started:.3f} s")
    assert (summary.replicated, summary.errors) == (1, 0)
    assert summary.packs == {"a": 1}
