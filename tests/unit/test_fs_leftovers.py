"""Leftover temporary files of a killed writer: which ones a sweep removes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from replicator.store.backends.fs import FsBackend
from replicator.store.tempfiles import Sweeper


def _file(path: Path, age: float) -> Path:
    path.write_bytes(b"x")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


async def test_a_put_removes_old_temporary_files_of_its_directory_only(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path / "peer", "p")
    (tmp_path / "peer" / "packs" / "ab").mkdir(parents=True)
    d = tmp_path / "peer" / "packs" / "ab"
    old = _file(d / ".replicator-tmp-0123456789abcdef", 3600)
    fresh = _file(d / ".replicator-tmp-fedcba9876543210", 0)
    other = _file(d / ".replicator-tmpfoo", 3600)  # not the pattern
    user = _file(d / "notes.txt", 3600)
    await backend.put("packs/ab/abcd", b"data")
    assert not old.exists()
    assert fresh.exists() and other.exists() and user.exists()
    assert backend.sweeper.removed == 1


def test_the_sweeper_remembers_a_bounded_number_of_directories(tmp_path: Path) -> None:
    sweeper = Sweeper(time.time(), remember=3)
    dirs = [tmp_path / f"d{i}" for i in range(5)]
    for d in dirs:
        d.mkdir()
        sweeper.sweep(d)
    assert len(sweeper._recent) == 3
    # An evicted directory is swept again when it is written to again.
    leftover = _file(dirs[0] / ".replicator-tmp-aa", 10)
    sweeper.sweep(dirs[0])
    assert not leftover.exists() and sweeper.removed == 1
    remembered = _file(dirs[0] / ".replicator-tmp-bb", 10)
    sweeper.sweep(dirs[0])
    assert remembered.exists()  # once per directory while remembered
