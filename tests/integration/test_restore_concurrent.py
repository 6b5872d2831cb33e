"""Restores (and fs puts) running at once in one directory: a writer's
temporary file is never swept while it is being written, however long it
stalls and whatever its mtime; a killed writer's file still is.

A drill runs several restores into one scratch directory; each restore
sweeps leftovers older than its own start, and a stalled or just-fsynced
(source mtime) temporary file of another restore looked like one."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator import restore as restore_module
from replicator.restore import Selection, restore
from replicator.store.backends import FsBackend
from replicator.store.tempfiles import TMP_PREFIX, Sweeper, find_leftovers
from tests.integration.store_builder import T0, StoreBuilder, tree

pytestmark = pytest.mark.integration


class _StallingPeer(FsBackend):
    """An fs peer whose first pack read waits until ``resume`` is set: a
    restore stalled mid-file by a slow peer or a loaded machine."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "stalling")
        self.stalled = asyncio.Event()
        self.resume = asyncio.Event()

    async def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if key.startswith("packs/") and not self.stalled.is_set():
            self.stalled.set()
            await self.resume.wait()
        return await super().get(key, start, length)


async def test_a_stalled_restore_keeps_its_file_when_another_restores_beside_it(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    files = {"d/a.bin": rng.randbytes(300_000), "d/b.bin": rng.randbytes(200_000)}
    builder = StoreBuilder(FsBackend(tmp_path / "peer"))
    await builder.init()
    for key, data in files.items():
        await builder.put(key, data, T0)
    stalling = _StallingPeer(tmp_path / "peer")
    out = tmp_path / "out"

    first = asyncio.create_task(restore(stalling, Selection("src", "d/a.bin", True, None), out))
    await stalling.stalled.wait()
    [held] = (out / "d").glob(f"{TMP_PREFIX}*")
    # The stalled file is now older than the next restore's start, less slack.
    await asyncio.sleep(restore_module.CLOCK_SLACK + 0.5)
    second = await restore(
        FsBackend(tmp_path / "peer"), Selection("src", "d/b.bin", True, None), out
    )
    assert second.ok, second.errors
    assert held.exists(), "a live restore's temporary file was swept by another restore"
    stalling.resume.set()
    got = await first
    assert got.ok, got.errors
    assert tree(out) == files


_HOLDER = """
import os, sys, time
from pathlib import Path
from replicator.store.tempfiles import TempFile
tmp = TempFile(Path(sys.argv[1]))
os.write(tmp.fd, b"partial")
old = time.time() - 3600
os.utime(tmp.fd, (old, old))  # as a restore does before its rename
print(tmp.path, flush=True)
time.sleep(600)
"""


def test_another_processes_held_file_is_kept_until_that_process_dies(tmp_path: Path) -> None:
    args = [sys.executable, "-c", _HOLDER, str(tmp_path)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None
            held = Path(holder.stdout.readline().strip())
            assert held.exists()
            assert find_leftovers(tmp_path, time.time()) == []
            sweeper = Sweeper(time.time())
            sweeper.sweep(tmp_path)
            assert held.exists() and sweeper.removed == 0
        finally:
            holder.kill()
    # Killed: the kernel dropped its lock, so the file is a leftover now.
    assert find_leftovers(tmp_path, time.time()) == [held]
    sweeper = Sweeper(time.time())
    sweeper.sweep(tmp_path)
    assert not held.exists() and sweeper.removed == 1
    assert os.listdir(tmp_path) == []
