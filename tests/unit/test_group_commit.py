"""The filesystem group commit (store/backends/fs_batch.py) on a real disk:
unnamed files where the filesystem has O_TMPFILE, named temporary files
where it does not, groups bounded by open descriptors, and what a crash
between the sync and the links leaves behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from replicator import failpoints
from replicator.errors import IntegrityError
from replicator.store.backends import fs_batch
from replicator.store.backends.fs import FsBackend
from replicator.store.bulk import PutItem, PutOutcome


def _items(n: int, tag: str = "") -> list[PutItem]:
    out: list[PutItem] = []
    for i in range(n):
        data = f"manifest {i}{tag}".encode()
        out.append((f"manifests/b/k{i}/0001-v", data, hashlib.sha256(data).digest()))
    return out


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


_CRASH = """
import hashlib, sys
from replicator.store.backends import fs_batch
from replicator.store.backends.fs import FsBackend
if sys.argv[2] == "named":
    fs_batch._no_anonymous.add(__import__("os").stat(sys.argv[1]).st_dev)
items = []
for i in range(8):
    data = b"manifest %d" % i
    items.append((f"manifests/b/k{i}/0001-v", data, hashlib.sha256(data).digest()))
fs_batch.write_many(FsBackend(sys.argv[1], "peer"), items)
"""


@pytest.mark.parametrize("kind", ["unnamed", "named"])
def test_a_crash_before_the_links_leaves_no_manifest(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "peer"
    root.mkdir()
    env = {**os.environ, "REPLICATOR_FAILPOINT": failpoints.GROUP_COMMIT_BEFORE_LINK}
    done = subprocess.run(
        [sys.executable, "-c", _CRASH, str(root), kind], env=env, capture_output=True, check=False
    )
    assert done.returncode == failpoints.CRASH_EXIT, done.stderr
    left = _files(root)
    print(f"{kind}: a crash between the sync and the links left {left}")
    assert not [f for f in left if not Path(f).name.startswith(".replicator-tmp-")]
    if kind == "unnamed":  # nothing at all: the kernel drops an unlinked inode
        assert left == []


@pytest.mark.parametrize("anonymous", [True, False])
def test_groups_bounded_by_descriptors_answer_every_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anonymous: bool
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    fs.root.mkdir()
    monkeypatch.setattr(fs_batch, "FD_GROUP", 3)
    if not anonymous:  # as on a filesystem that refuses O_TMPFILE
        monkeypatch.setattr(fs_batch, "_no_anonymous", {os.stat(fs.root).st_dev})
    first, again = _items(10), _items(10, " again")
    assert fs_batch.write_many(fs, first[:4]) == [True] * 4
    answers = fs_batch.write_many(fs, again)
    assert answers == [False] * 4 + [True] * 6  # put-if-absent: the first bytes stay
    for key, data, _ in first[:4] + again[4:]:
        assert (fs.root / key).read_bytes() == data
    assert len(_files(fs.root)) == 10  # no temporary file left


def test_concurrent_group_commits_of_the_same_names_write_each_once(tmp_path: Path) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    fs.root.mkdir()
    answers: list[list[PutOutcome]] = []
    threads = [
        threading.Thread(target=lambda t=t: answers.append(fs_batch.write_many(fs, _items(50, t))))
        for t in ("a", "b", "c")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(50):
        assert sum(a[i] is True for a in answers) == 1
        data = (fs.root / f"manifests/b/k{i}/0001-v").read_bytes()
        assert data in {f"manifest {i}{t}".encode() for t in "abc"}
    assert len(_files(fs.root)) == 50


@pytest.mark.parametrize("anonymous", [True, False])
async def test_single_puts_if_absent_race_and_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anonymous: bool
) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    fs.root.mkdir()
    if not anonymous:
        monkeypatch.setattr(fs_batch, "_no_anonymous", {os.stat(fs.root).st_dev})
    won = await asyncio.gather(
        *(fs.put_if_absent("index/ab/x", b"writer %d" % i) for i in range(6))
    )
    assert sorted(won) == [False] * 5 + [True]
    assert (fs.root / "index/ab/x").read_bytes() == b"writer %d" % won.index(True)
    bad = fs.put_if_absent("index/ab/y", b"data", sha256=hashlib.sha256(b"other").digest())
    with pytest.raises(IntegrityError):
        await bad
    assert _files(fs.root) == ["index/ab/x"]  # nothing of the refused put, no temporary file


def test_a_forked_child_links_its_own_files(tmp_path: Path) -> None:
    fs = FsBackend(tmp_path / "peer", "peer")
    fs.root.mkdir()
    assert fs_batch.write_many(fs, _items(2)) == [True, True]  # the parent's /proc/self/fd
    pid = os.fork()
    if pid == 0:  # the child: /proc/self/fd is now another process's table
        ok = fs_batch.write_many(fs, _items(4, " child")) == [False, False, True, True]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (fs.root / "manifests/b/k3/0001-v").read_bytes() == b"manifest 3 child"
    assert len(_files(fs.root)) == 4
