"""Store format: round trips, deterministic bytes, key escaping, refusals."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import IncompatibleStoreError, IntegrityError
from replicator.store.format import (
    PIECE,
    ChunkRef,
    IndexEntry,
    Manifest,
    PackIndex,
    PackRun,
    SourceIdentity,
    StoreConfig,
    decode_segment,
    encode_segment,
    index_key,
    manifest_key,
    manifest_prefix,
    pack_key,
    parse_manifest_key,
)

PARAMS = ChunkerParams(256, 1024, 4096, 1, 7)
# Any text: S3 keys are UTF-8, and file names that are not UTF-8 arrive as
# lone surrogates (surrogateescape), which the escaping keeps exact.
KEY_TEXT = st.text()
#: Keys long enough to need split names (up to 4 pieces once escaped).
LONG_TEXT = st.text(alphabet=st.sampled_from("ab/ .%+日本\udce9"), min_size=60, max_size=300)


def identity(key: str = "a/b.bin", t: int = 1_700_000_000_123_456_789) -> SourceIdentity:
    return SourceIdentity("src", "bucket", key, "v1", '"etag"', 10, t, "00A1")


def manifest(removed: bool = False) -> Manifest:
    runs = (
        PackRun(b"\x01" * 32, 0, (ChunkRef(b"\x02" * 32, 6, 6),)),
        PackRun(b"\x03" * 32, 100, (ChunkRef(b"\x04" * 32, 4, 3, "zstd"),)),
    )
    return Manifest(identity(), removed, b"\x05" * 32, PARAMS, () if removed else runs)


# ----------------------------------------------------------------- config


def test_store_config_round_trip_is_byte_identical() -> None:
    cfg = StoreConfig(PARAMS, compression="zstd")
    data = cfg.to_bytes()
    assert StoreConfig.from_bytes(data) == cfg
    assert StoreConfig.from_bytes(data).to_bytes() == data
    assert json.loads(data)["chunker"]["seed"] == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 4),
        ("version", "1"),
        ("version", True),
        ("format", "restic"),
        ("digest", "sha256"),
    ],
)
def test_store_config_from_another_format_is_refused(field: str, value: object) -> None:
    d = json.loads(StoreConfig(PARAMS).to_bytes())
    d[field] = value
    with pytest.raises(IncompatibleStoreError):
        StoreConfig.from_bytes(json.dumps(d).encode())


def test_store_config_with_other_chunker_is_refused_loudly() -> None:
    stored = StoreConfig(PARAMS)
    with pytest.raises(IncompatibleStoreError, match="peer-x"):
        stored.check_matches(StoreConfig(ChunkerParams(256, 1024, 4096, 1, 8)), "peer-x")
    stored.check_matches(StoreConfig(ChunkerParams(256, 1024, 4096, 1, 7)), "peer-x")


def test_store_config_that_is_not_json_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        StoreConfig.from_bytes(b'{"format": "replicator-store"')


# ----------------------------------------------------------------- index


def test_pack_index_round_trip_is_byte_identical() -> None:
    idx = PackIndex(
        b"\xaa" * 32,
        14,
        (IndexEntry(b"\x01" * 32, 0, 6, 6), IndexEntry(b"\x02" * 32, 6, 20, 8, "zstd")),
    )
    data = idx.to_bytes()
    assert PackIndex.from_bytes(data) == idx
    assert PackIndex.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d[:-1],
        lambda d: d.replace(b'"pack"', b'"pak"'),
        lambda d: d.replace(b'"size":14', b'"size":"x"'),
        lambda d: d.replace(b"aaaa", b"zzzz", 1),
        lambda d: b"\xff" + d,
    ],
)
def test_tampered_pack_index_is_an_integrity_error(tamper: object) -> None:
    data = PackIndex(b"\xaa" * 32, 14, (IndexEntry(b"\x01" * 32, 0, 6, 6),)).to_bytes()
    assert callable(tamper)
    with pytest.raises(IntegrityError):
        PackIndex.from_bytes(tamper(data))


# ----------------------------------------------------------------- manifests


@pytest.mark.parametrize("removed", [False, True])
def test_manifest_round_trip_is_byte_identical(removed: bool) -> None:
    m = manifest(removed)
    data = m.to_bytes()
    assert data == manifest(removed).to_bytes()  # deterministic: a replay writes the same
    back = Manifest.from_bytes(data)
    assert back == m
    assert back.to_bytes() == data
    assert back.store_key() == m.store_key()


def test_manifest_json_fields_are_the_documented_ones() -> None:
    d = json.loads(manifest().to_bytes())
    assert set(d) == {"version", "kind", "object", "digest", "chunker", "runs"}
    assert d["kind"] == "created"
    assert d["object"]["event_time"] == "2023-11-14T22:13:20.123457Z"
    # Uncompressed chunks are [digest, length]; compressed ones carry more.
    assert d["runs"][0]["chunks"] == [["02" * 32, 6]]
    assert d["runs"][1]["chunks"] == [["04" * 32, 4, 3, "zstd"]]


def test_tombstone_and_creation_at_one_time_get_different_names() -> None:
    assert manifest(True).version_name != manifest(False).version_name
    assert json.loads(manifest(True).to_bytes())["kind"] == "removed"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d.replace(b'"runs"', b'"rns"'),
        lambda d: d.replace(b'"object"', b'"obj"'),
        lambda d: d.replace(b'"offset":100', b'"offset":"x"'),
        lambda d: d.replace(b'"digest":"0505', b'"digest":"zz05'),
        lambda d: d.replace(b'"chunker":[256', b'"chunker":[255'),  # odd: invalid params
    ],
)
def test_tampered_manifest_is_an_integrity_error(tamper: object) -> None:
    assert callable(tamper)
    with pytest.raises(IntegrityError):
        Manifest.from_bytes(tamper(manifest().to_bytes()))


@given(st.integers(0, 2**63), st.integers(0, 2**63), KEY_TEXT, KEY_TEXT)
def test_version_names_sort_by_event_time(t1: int, t2: int, k1: str, k2: str) -> None:
    assume(t1 != t2)
    n1, n2 = identity(k1, t1).version_name(False), identity(k2, t2).version_name(True)
    assert (n1 < n2) == (t1 < t2)
    assert int(n1.split("-")[0]) == t1


def test_version_name_depends_on_the_whole_identity() -> None:
    base = identity()
    other = SourceIdentity(
        base.source, base.bucket, base.key, "v2", base.etag, base.size, base.event_time_ns
    )
    assert base.version_name(False) != other.version_name(False)
    assert base.version_name(False)[:20] == other.version_name(False)[:20]
    # v2: time, sequencer "00A1" as 3-digit length + "A1", observation, hash.
    assert len(base.version_name(False)) == 20 + 1 + 3 + 2 + 1 + 20 + 1 + 24


# ----------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("plain.bin", "plain.bin"),
        ("with space", "with%20space"),
        ("a+b", "a%2Bb"),
        ("100%", "100%25"),
        ("dir/file", "dir%2Ffile"),
        ("ünï/日本", "%C3%BCn%C3%AF%2F%E6%97%A5%E6%9C%AC"),
        ("a..b", "a..b"),
        ("..", "%2E."),
        (".", "%2E"),
        ("", "%"),
        ("\x00", "%00"),
        (".replicator-tmp", "%2Ereplicator-tmp"),
        ("caf\udce9", "caf%E9"),
        ("../etc/passwd", "%2E.%2Fetc%2Fpasswd"),
        ("a//b/", "a%2F%2Fb%2F"),
    ],
)
def test_encode_segment(text: str, segment: str) -> None:
    assert encode_segment(text) == segment
    assert decode_segment(segment) == text
    assert "/" not in segment
    assert segment not in ("", ".", "..")
    assert not segment.startswith(".")


@given(KEY_TEXT, KEY_TEXT)
def test_manifest_key_round_trips(bucket: str, key: str) -> None:
    name = manifest_key(bucket, key, "00000000000000000001-abc")
    assert name.count("/") >= 3
    assert all(seg not in ("", ".", "..") for seg in name.split("/"))
    assert all(len(seg.encode()) <= 255 for seg in name.split("/"))
    assert parse_manifest_key(name) == (bucket, key, "00000000000000000001-abc")


@given(KEY_TEXT, KEY_TEXT, st.data())
def test_manifest_prefix_is_a_prefix_of_every_matching_key(
    bucket: str, key: str, data: st.DataObject
) -> None:
    # The empty key is escaped whole ('%'): it is listed under the bucket.
    assume(key != "")
    cut = data.draw(st.integers(0, len(key)))
    assert manifest_key(bucket, key, "v").startswith(manifest_prefix(bucket, key[:cut]))


@given(KEY_TEXT, KEY_TEXT, KEY_TEXT)
def test_manifest_prefix_matches_no_other_key(bucket: str, key: str, prefix: str) -> None:
    assume(key != "")
    matches = manifest_key(bucket, key, "v").startswith(manifest_prefix(bucket, prefix))
    assert matches == key.startswith(prefix)


def test_buckets_do_not_share_prefixes() -> None:
    assert not manifest_key("ab", "k", "v").startswith(manifest_prefix("a"))


def test_parse_manifest_key_refuses_other_names() -> None:
    for bad in ("packs/aa/aabb", "manifests/b/k", "manifests/b/k/v/extra", "config"):
        with pytest.raises(ValueError, match="not a manifest"):
            parse_manifest_key(bad)


def test_pack_and_index_names_fan_out_by_first_byte() -> None:
    name = blake3_digest(b"pack")
    assert pack_key(name) == f"packs/{name.hex()[:2]}/{name.hex()}"
    assert index_key(name) == f"index/{name.hex()[:2]}/{name.hex()}"


@given(LONG_TEXT, st.data())
def test_long_names_split_into_short_segments_and_keep_prefixes(
    key: str, data: st.DataObject
) -> None:
    name = manifest_key("bucket", key, "v")
    segments = name.split("/")
    assert all(0 < len(seg.encode()) <= PIECE + 1 for seg in segments)
    assert not any(seg.startswith(".") for seg in segments)
    assert parse_manifest_key(name) == ("bucket", key, "v")
    cut = data.draw(st.integers(1, len(key)))
    assert name.startswith(manifest_prefix("bucket", key[:cut]))
    other = data.draw(LONG_TEXT)
    assume(other)
    matches = name.startswith(manifest_prefix("bucket", other))
    assert matches == key.startswith(other)


def test_long_keys_list_their_versions_together() -> None:
    # Byte order of the stored names keeps each key's versions contiguous,
    # also where one key's name is a piece boundary of a longer one.
    base = "x" * PIECE
    keys = [base, base + "y", base + "%", base[:-1], base + "y" * PIECE, "日本" * 50]
    names = sorted(manifest_key("b", k, f"{t:020d}-{'0' * 24}") for k in keys for t in (1, 2, 3))
    seen: list[str] = []
    for name in names:
        key = parse_manifest_key(name)[1]
        if not seen or seen[-1] != key:
            assert key not in seen, f"versions of {key!r} are not contiguous"
            seen.append(key)
    assert sorted(seen) == sorted(keys)


def test_short_names_are_unchanged_from_version_1() -> None:
    assert manifest_key("bkt", "a/b c", "v") == "manifests/bkt/a%2Fb%20c/v"
    assert manifest_key("b", "x" * PIECE, "v") == f"manifests/b/{'x' * PIECE}/v"
    assert manifest_key("b", "x" * (PIECE + 1), "v") == f"manifests/b/{'x' * PIECE}/+x/v"


def test_version_1_store_config_is_still_read() -> None:
    d = json.loads(StoreConfig(PARAMS).to_bytes())
    assert d["version"] == 2
    d["version"] = 1
    assert StoreConfig.from_bytes(json.dumps(d).encode()).chunker == PARAMS


@pytest.mark.parametrize(
    "data",
    [b"[]", b"{}", b'{"format":"replicator-store","version":1,"digest":"blake3"}', b"17"],
)
def test_store_config_of_the_wrong_shape_is_incompatible(data: bytes) -> None:
    with pytest.raises(IncompatibleStoreError, match="'config'"):
        StoreConfig.from_bytes(data)


@pytest.mark.parametrize(
    "bad",
    [
        "manifests/b/" + "x" * 10 + "/+y/v",  # a split piece that is not PIECE long
        "manifests/b/+x/v",  # a continuation without a first piece
        "manifests/b/" + "x" * PIECE + "/+/v",  # an empty continuation
        "manifests/b//v",
    ],
)
def test_parse_manifest_key_refuses_malformed_split_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not a manifest"):
        parse_manifest_key(bad)
