"""The read path's pure parts: version choice, run splitting, chunk checks,
--at parsing, key-to-path safety, and listing over a real directory store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import ConfigError, IncompatibleStoreError, IntegrityError
from replicator.restore import UnsafeKeyError, parse_time, target_path
from replicator.store.backends import FsBackend
from replicator.store.format import (
    ChunkRef,
    Manifest,
    PackRun,
    SourceIdentity,
    StoreConfig,
    manifest_key,
)
from replicator.store.reader import (
    ChunkError,
    VersionEntry,
    choose_version,
    decode_chunks,
    list_versions,
    read_manifest,
    read_store_config,
    split_run,
    verified_chunks,
)

PARAMS = ChunkerParams(256, 1024, 4096)


def entry(t: int, suffix: str = "0" * 24) -> VersionEntry:
    name = f"{t:020d}-{suffix}"
    return VersionEntry(f"manifests/b/k/{name}", "k", name, "b")


def run_of(*chunks: bytes, offset: int = 0) -> tuple[PackRun, bytes]:
    refs = tuple(ChunkRef(blake3_digest(c), len(c), len(c)) for c in chunks)
    return PackRun(b"\x07" * 32, offset, refs), b"".join(chunks)


# ----------------------------------------------------------------- versions


def test_choose_version_picks_newest_at_or_before() -> None:
    versions = [entry(10), entry(20), entry(30)]
    assert choose_version(versions, None) == versions[2]
    assert choose_version(versions, 9) is None
    assert choose_version(versions, 10) == versions[0]
    assert choose_version(versions, 29) == versions[1]
    assert choose_version(versions, 30) == versions[2]
    assert choose_version(versions, 10**19) == versions[2]
    assert choose_version([], None) is None


def test_event_time_comes_from_the_name() -> None:
    assert entry(1_700_000_000_000_000_001).event_time_ns == 1_700_000_000_000_000_001


# ----------------------------------------------------------------- runs and chunks


def test_split_run_keeps_chunk_boundaries_and_offsets() -> None:
    run, _ = run_of(b"a" * 5, b"b" * 5, b"c" * 5, b"d" * 12, offset=100)
    parts = list(split_run(run, max_read=10))
    assert [len(p.chunks) for p in parts] == [2, 1, 1]  # an oversized chunk stands alone
    assert [p.offset for p in parts] == [100, 110, 115]
    assert sum((p.chunks for p in parts), ()) == run.chunks
    assert list(split_run(run)) == [run]


def test_verified_chunks_return_the_bytes() -> None:
    run, data = run_of(b"hello", b"", b"world")
    assert list(verified_chunks(run, data)) == [b"hello", b"", b"world"]


def test_a_flipped_bit_names_the_chunk_and_pack() -> None:
    run, data = run_of(b"hello", b"world")
    bad = bytearray(data)
    bad[6] ^= 0x10
    results = list(decode_chunks(run, bytes(bad)))
    assert results[0][1] == b"hello"
    err = results[1][1]
    assert isinstance(err, ChunkError)
    assert err.chunk == blake3_digest(b"world")
    assert err.pack == run.pack
    assert "BLAKE3 mismatch" in str(err)
    assert run.pack.hex() in str(err)
    with pytest.raises(ChunkError):
        list(verified_chunks(run, bytes(bad)))


def test_unknown_compression_is_named() -> None:
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"x"), 1, 1, "lz4"),))
    ((_, err),) = decode_chunks(run, b"x")
    assert isinstance(err, ChunkError)
    assert "lz4" in str(err)


def test_zstd_chunks_need_the_zstandard_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import zstandard` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "zstandard", None)
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"xxxx"), 4, 3, "zstd"),))
    with pytest.raises(IncompatibleStoreError, match="zstandard"):
        list(decode_chunks(run, b"abc"))


def test_zstd_chunks_are_decompressed_and_checked() -> None:
    import zstandard  # noqa: PLC0415 - a dependency of replicator

    data = zstandard.ZstdCompressor().compress(b"xxxx" * 100)
    run = PackRun(
        b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"xxxx" * 100), 400, len(data), "zstd"),)
    )
    assert list(verified_chunks(run, data)) == [b"xxxx" * 100]
    ((_, err),) = decode_chunks(run, data[:-2])
    assert isinstance(err, ChunkError)


# ----------------------------------------------------------------- --at and paths


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1700000000", 1_700_000_000_000_000_000),
        ("1700000000.123456789", 1_700_000_000_123_456_789),
        ("2023-11-14T22:13:20", 1_700_000_000_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000_000_000),
        ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500_000_000),
        ("2023-11-14", 1_699_920_000_000_000_000),
    ],
)
def test_parse_time(text: str, ns: int) -> None:
    assert parse_time(text) == ns


def test_parse_time_refuses_other_text() -> None:
    with pytest.raises(ConfigError, match="--at"):
        parse_time("yesterday")


@pytest.mark.parametrize(
    ("key", "parts", "is_dir"),
    [
        ("a", ("a",), False),
        ("dir/sub/file with space+plus%.bin", ("dir", "sub", "file with space+plus%.bin"), False),
        ("a..b/..c/d..", ("a..b", "..c", "d.."), False),
        ("ünï/日本.txt", ("ünï", "日本.txt"), False),
        ("folder/", ("folder",), True),
    ],
)
def test_target_path_keeps_keys_under_the_root(
    tmp_path: Path, key: str, parts: tuple[str, ...], is_dir: bool
) -> None:
    assert target_path(tmp_path, key) == (tmp_path.joinpath(*parts), is_dir)


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../x", "..", "/etc/passwd", "a//b", "./a", "a/./b", "", "/", "a\x00b", "a/.."],
)
def test_target_path_refuses_keys_that_could_escape(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        target_path(tmp_path, key)


# ----------------------------------------------------------------- listing (real fs store)


async def _put_manifest(backend: FsBackend, key: str, t: int, removed: bool = False) -> str:
    ident = SourceIdentity("s", "bkt", key, "", "", 0, t)
    m = Manifest(ident, removed, blake3_digest(b""), PARAMS)
    await backend.put(m.store_key(), m.to_bytes())
    return m.version_name


KEYS = ["a", "a b", "a+b", "a/b", "a..b", "ab", ".", "..", ".x", "é", "b"]


async def test_listing_groups_versions_per_key_across_pages(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "t", page_size=2)  # many pages for a few keys
    for i, key in enumerate(KEYS):
        for t in (300 + i, 100 + i, 200 + i):
            await _put_manifest(backend, key, t)
    await _put_manifest(backend, "a", 1, removed=True)
    await backend.put(manifest_key("other", "a", f"{5:020d}-{'0' * 24}"), b"{}")
    seen = {k: [v.event_time_ns for v in vs] async for k, vs in list_versions(backend, "bkt")}
    assert sorted(seen) == sorted(KEYS)
    assert seen["a"] == [1, 100, 200, 300]
    assert seen["ab"] == [105, 205, 305]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a", ["a", "a b", "a+b", "a/b", "a..b", "ab"]),
        ("a/", ["a/b"]),
        (".", [".", "..", ".x"]),
        ("..", [".."]),
        ("é", ["é"]),
        ("zz", []),
    ],
)
async def test_listing_by_prefix(tmp_path: Path, prefix: str, expected: list[str]) -> None:
    backend = FsBackend(tmp_path, "t", page_size=3)
    for key in KEYS:
        await _put_manifest(backend, key, 1)
    got = [k async for k, _ in list_versions(backend, "bkt", prefix)]
    assert sorted(got) == sorted(expected)


async def test_listing_an_exact_key_ignores_longer_keys(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "t")
    for key in KEYS:
        await _put_manifest(backend, key, 1)
    assert [k async for k, _ in list_versions(backend, "bkt", "a", exact=True)] == ["a"]
    assert [k async for k, _ in list_versions(backend, "bkt", "..", exact=True)] == [".."]


async def test_a_manifest_stored_under_another_name_is_refused(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "t")
    name = await _put_manifest(backend, "real", 1)
    body = await backend.get(manifest_key("bkt", "real", name))
    forged = manifest_key("bkt", "forged", name)
    await backend.put(forged, body)
    with pytest.raises(Exception, match="does not match its name"):
        await read_manifest(backend, VersionEntry(forged, "forged", name, "bkt"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace(b'",6]', b'",6,6]'),  # a chunk array of three items
        lambda d: d.replace(b'"key":"real"', b'"key":"\\ud800"'),  # a lone surrogate
        lambda d: b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the parser goes
    ],
)
async def test_corrupt_manifests_are_integrity_errors(tmp_path: Path, tamper: Any) -> None:
    backend = FsBackend(tmp_path, "t")
    m = Manifest(
        SourceIdentity("s", "bkt", "real", "", "", 6, 1),
        False,
        blake3_digest(b"abcdef"),
        PARAMS,
        (PackRun(b"\x01" * 32, 0, (ChunkRef(blake3_digest(b"abcdef"), 6, 6),)),),
    )
    body = tamper(m.to_bytes())
    assert body != m.to_bytes()
    await backend.put(m.store_key(), body)
    with pytest.raises(IntegrityError):
        await read_manifest(backend, VersionEntry(m.store_key(), "real", m.version_name, "bkt"))


async def test_store_config_is_required(tmp_path: Path) -> None:
    backend = FsBackend(tmp_path, "t")
    with pytest.raises(IncompatibleStoreError, match="not a replicator store"):
        await read_store_config(backend)
    await backend.put("config", StoreConfig(PARAMS).to_bytes())
    assert (await read_store_config(backend)).chunker == PARAMS
