"""A filesystem peer's probe answer is kept in the cache directory: a
re-run writes no probe files, and the probe runs again whenever the peer's
root directory or filesystem may have changed (store/backends/fs_probe.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from replicator._native import ChunkerParams
from replicator.config import FsDestinationSettings
from replicator.store.backends import FsBackend
from replicator.store.backends.fs_probe import MAX_AGE_SECONDS
from replicator.store.format import StoreConfig
from replicator.store.peer import Peer, make_backend, open_peer

WANTED = StoreConfig(chunker=ChunkerParams())


async def _open(root: Path, cache: Path) -> Peer:
    dest = FsDestinationSettings(name="peer", path=root)
    peer = await open_peer(dest, WANTED, create=True, cache_dir=cache)
    await peer.close()
    return peer


def _record(cache: Path) -> Path:
    [found] = cache.glob("*.probe.json")
    return found


def _root_changed(root: Path) -> int:
    # The probe creates and removes files in the root: its mtime moves.
    return os.stat(root).st_mtime_ns


async def test_second_open_writes_no_probe(tmp_path: Path) -> None:
    root, cache = tmp_path / "peer", tmp_path / "cache"
    first = await _open(root, cache)
    assert first.capabilities is not None and first.capabilities.put_if_absent
    before = _root_changed(root)
    os.utime(root, ns=(before - 10**9, before - 10**9))  # any probe write moves it again
    second = await _open(root, cache)
    assert second.capabilities == first.capabilities
    assert _root_changed(root) == before - 10**9
    assert sorted(os.listdir(root)) == ["config"]


async def test_a_replaced_root_is_probed_again(tmp_path: Path) -> None:
    root, cache = tmp_path / "peer", tmp_path / "cache"
    await _open(root, cache)
    old = json.loads(_record(cache).read_text())["fingerprint"]
    shutil.copytree(root, tmp_path / "copy")
    shutil.rmtree(root)
    (tmp_path / "copy").rename(root)  # same path, another directory (inode)
    stamp = _root_changed(root) - 10**9
    os.utime(root, ns=(stamp, stamp))
    await _open(root, cache)
    assert _root_changed(root) != stamp  # probed: files were made and removed
    assert json.loads(_record(cache).read_text())["fingerprint"] != old


async def test_a_changed_mode_or_old_or_torn_record_probes_again(tmp_path: Path) -> None:
    root, cache = tmp_path / "peer", tmp_path / "cache"
    await _open(root, cache)
    record = _record(cache)
    for spoil in ("mode", "age", "torn"):
        if spoil == "mode":
            root.chmod(stat.S_IMODE(os.stat(root).st_mode) ^ 0o001)
        elif spoil == "age":
            data = json.loads(record.read_text())
            data["at"] -= MAX_AGE_SECONDS + 1
            record.write_text(json.dumps(data))
        else:
            record.write_text(record.read_text()[:20])
        stamp = _root_changed(root) - 10**9
        os.utime(root, ns=(stamp, stamp))
        await _open(root, cache)
        assert _root_changed(root) != stamp, spoil
        assert json.loads(record.read_text())["fingerprint"][0] == 1


async def test_without_a_cache_dir_every_open_probes(tmp_path: Path) -> None:
    backend = make_backend(FsDestinationSettings(name="peer", path=tmp_path))
    assert not isinstance(backend, FsBackend)  # in the retry wrapper
    inner = backend.inner  # type: ignore[attr-defined]
    assert isinstance(inner, FsBackend) and inner.probe_record is None
    for _ in range(2):
        stamp = _root_changed(tmp_path) - 10**9
        os.utime(tmp_path, ns=(stamp, stamp))
        await inner.probe()
        assert _root_changed(tmp_path) != stamp
