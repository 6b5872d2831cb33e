"""The held check: a manifest's head (kind and identity) read without its
chunk list, and held_many / keys_at_peer through the peer's ManifestStore."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams
from replicator.errors import IntegrityError
from replicator.origins.fs import FsOrigin
from replicator.pipeline.reconcile import (
    held_many,
    identity_of,
    keys_at_peer,
    read_manifest,
)
from replicator.store.backends import FsBackend
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity
from replicator.store.heads import manifest_head
from replicator.store.manifest_store import ObjectManifests
from tests.unit.test_format_v2 import V1_MANIFEST

PARAMS = ChunkerParams(256, 1024, 4096)
# Keys and tags holding the very markers the head parse looks for.
_text = st.text(max_size=16) | st.sampled_from(
    ['},"runs":[', ',"object":{', '"kind":"removed"', "\\", '"', "\udc80"]
)
_maybe = st.none() | st.integers(0, 1 << 62)
_identities = st.builds(
    SourceIdentity,
    _text,
    _text,
    _text,
    _text,
    _text,
    st.integers(0, 1 << 50),
    st.integers(0, 4 * 10**18),
    _text,
    _maybe,
    _maybe,
    st.integers(0, 1 << 40),
)


def big_manifest(
    ident: SourceIdentity, chunks: int, removed: bool = False, fmt: int = 2
) -> Manifest:
    refs = tuple(ChunkRef(bytes([i % 256]) * 32, 65536, 65536) for i in range(chunks))
    runs = (PackRun(b"\x01" * 32, 0, refs),) if chunks else ()
    return Manifest(ident, removed, b"\x02" * 32, PARAMS, runs, format_version=fmt)


@given(_identities, st.booleans(), st.sampled_from([1, 2]), st.integers(0, 3))
def test_the_head_is_what_the_whole_parse_gives(
    ident: SourceIdentity, removed: bool, fmt: int, chunks: int
) -> None:
    m = Manifest.from_bytes(big_manifest(ident, chunks, removed, fmt).to_bytes())
    assert manifest_head(m.to_bytes()) == (m.removed, m.identity)


def test_a_version_1_manifest_head() -> None:
    m = Manifest.from_bytes(V1_MANIFEST)
    assert manifest_head(V1_MANIFEST) == (False, m.identity)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace(b'"kind":"created"', b'"kind":"other"'),
        lambda d: d.replace(b'"size":3', b'"size":"x"'),
        lambda d: d[:-40],
        lambda d: d.replace(b',"object":{', b',"object":['),
    ],
)
def test_a_malformed_head_is_an_integrity_error(tamper: object) -> None:
    body = big_manifest(SourceIdentity("s", "b", "k", "", "", 3, 1), 1).to_bytes()
    assert callable(tamper)
    with pytest.raises(IntegrityError):
        manifest_head(tamper(body))


def test_the_head_of_a_large_files_manifest_skips_its_chunk_list() -> None:
    """Prints the figures; no threshold (the machine is shared)."""
    ident = SourceIdentity("fs:/src", "", "model/shard-0001.bin", "", "e", 1 << 32, 17 * 10**17)
    for chunks in (1, 65536):
        data = big_manifest(ident, chunks).to_bytes()
        n = 2000 if chunks == 1 else 5
        t0 = time.perf_counter()
        for _ in range(n):
            Manifest.from_bytes(data)
        whole = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for _ in range(n):
            manifest_head(data)
        head = (time.perf_counter() - t0) / n
        print(f"{chunks} chunks: whole parse {whole * 1e6:.1f} us, head {head * 1e6:.1f} us")


async def test_held_many_through_the_store(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"abc")
    origin = FsOrigin(src)
    (obj,) = [v async for v in origin.list("")]
    store = ObjectManifests(FsBackend(tmp_path / "peer", "peer"))
    ident = identity_of(origin, obj, "e")
    other = SourceIdentity(origin.source_id, origin.bucket, "a", "", "", 99, obj.event_time_ns)
    (h,) = await held_many(store.backend, origin, [obj])  # a bare Backend works too
    assert (h.held, h.observed) == (False, 0)
    await store.put_many([big_manifest(other, 0)])
    (h,) = await held_many(store, origin, [obj])
    assert (h.held, h.observed) == (False, 1)  # after the other manifest at that time
    await store.put_many([big_manifest(ident, 1)])
    assert [h.held for h in await held_many(store, origin, [obj, obj])] == [True, True]
    (pair,) = [p async for p in keys_at_peer(store, origin.bucket, "")]
    newest = await read_manifest(store.backend, pair[1])
    assert pair[0] == "a" and newest is not None
