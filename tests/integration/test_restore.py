"""Restore is byte-for-byte for every version (RELIABILITY item 13), over
every backend: 0-byte objects, sizes at the chunker's bounds, many versions
per key, tombstones, awkward key names; unsafe keys are refused."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from replicator.commands.restore import restore_command
from replicator.store.backends import FsBackend
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import (
    SECOND,
    T0,
    StoreBuilder,
    build_corpus,
    run_cli,
    tree,
    write_config,
)

pytestmark = pytest.mark.integration


async def test_every_version_restores_byte_for_byte(store: StoreUnderTest, tmp_path: Path) -> None:
    builder = StoreBuilder(store.backend)
    corpus = await build_corpus(builder)
    config = write_config(tmp_path / "replicator.toml", store)
    restored = compared = 0
    times = corpus.times()
    for i, t in enumerate([T0, *times]):
        out = tmp_path / f"at-{i}"
        at = f"{t // SECOND}.{t % SECOND:09d}"
        args = ["--config", str(config), "--destination", "peer", "--prefix", "", "--to", str(out)]
        res = await run_cli(restore_command, [*args, "--at", at, "--json"], store)
        assert res.exit_code == 0, res.stderr
        summary = res.json()
        expected = corpus.state_at(t)
        got = tree(out)
        assert got.keys() == expected.keys()
        for key, data in expected.items():
            assert got[key] == data, key
        assert summary["objects"] == len(expected)
        assert summary["bytes"] == sum(map(len, expected.values()))
        assert summary["errors"] == []
        removed_now = {
            k
            for k, h in corpus.history.items()
            if k not in expected and any(vt <= t for vt, _ in h)
        }
        assert set(summary["removed"]) == removed_now
        restored += summary["objects"]
        compared += summary["bytes"]
    versions = sum(len(h) for h in corpus.history.values())
    print(
        f"[{store.kind}] {versions} versions of {len(corpus.history)} keys; {len(times) + 1} "
        f"restores --at: {restored} objects, {compared} bytes compared byte-for-byte"
    )


async def test_restore_one_key_at_each_of_its_versions(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    builder = StoreBuilder(store.backend)
    corpus = await build_corpus(builder)
    config = write_config(tmp_path / "replicator.toml", store)
    base = ["--config", str(config), "--destination", "peer", "--key", "ckpt/model.pt"]
    for i, (t, data) in enumerate(corpus.history["ckpt/model.pt"]):
        out = tmp_path / f"v{i}"
        iso = f"{t // SECOND}"  # whole seconds: the ISO and epoch forms agree
        for at in (iso, _iso(t)):
            res = await run_cli(restore_command, [*base, "--to", str(out), "--at", at], store)
            assert res.exit_code == 0, res.stderr
            assert (out / "ckpt" / "model.pt").read_bytes() == data
    # Without --at: the newest version.
    res = await run_cli(restore_command, [*base, "--to", str(tmp_path / "latest")], store)
    assert res.exit_code == 0
    assert (tmp_path / "latest/ckpt/model.pt").read_bytes() == corpus.history["ckpt/model.pt"][-1][
        1
    ]


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t // SECOND, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def test_a_removed_or_missing_key_is_reported_with_exit_1(
    store: StoreUnderTest, tmp_path: Path
) -> None:
    builder = StoreBuilder(store.backend)
    await build_corpus(builder)
    config = write_config(tmp_path / "replicator.toml", store)
    base = ["--config", str(config), "--destination", "peer", "--to", str(tmp_path / "out")]
    res = await run_cli(restore_command, [*base, "--key", "gone.txt", "--json"], store)
    assert res.exit_code == 1
    assert res.json()["removed"] == ["gone.txt"]
    assert not (tmp_path / "out/gone.txt").exists()
    res = await run_cli(restore_command, [*base, "--key", "no/such/key"], store)
    assert res.exit_code == 1
    assert "no manifests for key 'no/such/key'" in res.stderr


async def test_keys_that_would_escape_are_refused(store: StoreUnderTest, tmp_path: Path) -> None:
    builder = StoreBuilder(store.backend)
    await builder.init()
    unsafe = ["../escape.txt", "a/../../escape2.txt", "/abs/path", "double//slash", "./dot", ".."]
    safe = {"ok/file.txt": b"fine", "a..b/..c": b"dots are fine inside names"}
    for i, key in enumerate([*unsafe, *safe]):
        await builder.put(key, safe.get(key, b"evil " + key.encode()), T0 + i)
    config = write_config(tmp_path / "replicator.toml", store)
    sandbox = tmp_path / "sandbox"
    out = sandbox / "out"
    args = ["--config", str(config), "--destination", "peer", "--prefix", "", "--to", str(out)]
    res = await run_cli(restore_command, [*args, "--json"], store)
    assert res.exit_code == 1
    summary = res.json()
    assert sorted(e["key"] for e in summary["errors"]) == sorted(unsafe)
    assert tree(out) == safe
    assert sorted(p.name for p in sandbox.iterdir()) == ["out"]  # nothing beside the target
    assert not _exists("/abs/path")
    print(f"[{store.kind}] {len(unsafe)} unsafe keys refused, {len(safe)} safe keys restored")


@pytest.fixture
async def fs_store(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """For properties of the target directory or the CLI, not of a backend."""
    backend = FsBackend(tmp_path / "peer", "fs-test")
    yield StoreUnderTest("fs", backend, root=tmp_path / "peer")
    await backend.close()


async def test_a_symlink_in_the_target_does_not_lead_outside(
    fs_store: StoreUnderTest, tmp_path: Path
) -> None:
    store = fs_store
    builder = StoreBuilder(store.backend)
    await builder.init()
    await builder.put("link/file.txt", b"x", T0)
    await builder.put("link/sub/deeper.txt", b"y", T0)
    await builder.put("link/marker/", b"", T0)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside)
    config = write_config(tmp_path / "replicator.toml", store)
    args = ["--config", str(config), "--destination", "peer", "--prefix", "link/"]
    res = await run_cli(restore_command, [*args, "--to", str(out), "--json"], store)
    assert res.exit_code == 1
    errors = res.json()["errors"]
    assert sorted(e["key"] for e in errors) == [
        "link/file.txt",
        "link/marker/",
        "link/sub/deeper.txt",
    ]
    assert all("outside the target" in e["message"] for e in errors)
    assert list(outside.iterdir()) == []


async def test_usage_errors_exit_2(fs_store: StoreUnderTest, tmp_path: Path) -> None:
    store = fs_store
    config = write_config(tmp_path / "replicator.toml", store)
    base = ["--config", str(config), "--destination", "peer", "--to", str(tmp_path / "o")]
    assert (
        await run_cli(restore_command, base, store)
    ).exit_code == 2  # neither --key nor --prefix
    both = [*base, "--key", "a", "--prefix", "b"]
    assert (await run_cli(restore_command, both, store)).exit_code == 2
    bad_at = [*base, "--key", "a", "--at", "yesterday"]
    assert (await run_cli(restore_command, bad_at, store)).exit_code == 2
    no_store = [*base, "--key", "a"]  # the destination directory holds no store yet
    res = await run_cli(restore_command, no_store, store)
    assert res.exit_code == 2
    assert "not a replicator store" in res.stderr
