"""The segment codec (store format 3): round trips, order, and corrupt input
named by segment."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.errors import IntegrityError
from replicator.store.format import Manifest, SourceIdentity, manifest_key
from replicator.store.segments import (
    PREAMBLE,
    check_entry,
    encode,
    header_length,
    parse,
    parse_header,
    parse_segment_key,
    segment_key,
    slice_entry,
    sort_name,
    split_batches,
)

PARAMS = ChunkerParams(256, 1024, 4096)
# Keys that escape, split (over 200 escaped characters), or are not UTF-8.
KEYS = st.one_of(
    st.text(min_size=0, max_size=30),
    st.text(alphabet="ab/.%+ é", min_size=190, max_size=230),
    st.sampled_from(["a", "a/b", "a b", "a+b", ".hidden", "x" * 200, "x" * 200 + "y", "\udcff"]),
)
VERSIONS = st.from_regex(r"[0-9]{20}-[0-9]{3}-[0-9]{20}-[0-9a-f]{24}", fullmatch=True)
ITEMS = st.lists(
    st.tuples(KEYS, VERSIONS, st.binary(min_size=0, max_size=300)),
    min_size=1,
    max_size=20,
    unique_by=lambda t: (t[0], t[1]),
)


@given(bucket=st.text(min_size=1, max_size=20), items=ITEMS, seed=st.integers(0, 1000))
def test_a_segment_round_trips_in_any_input_order(
    bucket: str, items: list[tuple[str, str, bytes]], seed: int
) -> None:
    seg = encode(bucket, items)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    assert encode(bucket, shuffled).data == seg.data, "deterministic: same items, same bytes"
    header = parse(seg.data, seg.name)
    assert header == seg.header and header.bucket == bucket
    assert parse_segment_key(seg.name) == (bucket, blake3_digest(seg.data))
    got = {(e.key, e.version_name): slice_entry(seg.data, e, seg.name) for e in header.entries}
    assert got == {(k, v): d for k, v, d in items}
    # Entry order is the order a version-2 store lists the same manifests in.
    names = [manifest_key(bucket, e.key, e.version_name) for e in header.entries]
    assert names == sorted(names)
    # The header alone (a ranged read of its first bytes) parses the same.
    head = seg.data[: header_length(seg.data, seg.name) + 1]
    assert parse_header(head, seg.name, len(seg.data)) == header


def test_every_part_is_a_line_so_sed_prints_one_manifest_per_line() -> None:
    m = Manifest(SourceIdentity("fs", "b", "k", "", "e", 0, 1), False, b"\0" * 32, PARAMS)
    seg = encode("b", [("k", m.version_name, m.to_bytes()), ("j", "1-x", b"{}")])
    lines = seg.data.split(b"\n")
    assert len(lines[0]) + 1 == PREAMBLE
    assert json.loads(lines[1])["count"] == 2
    assert lines[2:] == [b"{}", m.to_bytes(), b""], "sorted: key 'j' before 'k'"


def test_sort_name_is_the_version_2_name_below_the_bucket() -> None:
    # A key of exactly 200 escaped characters is a prefix of a split one:
    # the v2 listing puts the split key first ('+' sorts before digits).
    a, b = "x" * 200, "x" * 200 + "y"
    seg = encode("b", [(a, "1-a", b"1"), (b, "1-a", b"2")])
    assert [e.key for e in seg.header.entries] == [b, a]
    assert sort_name(b, "1-a") < sort_name(a, "1-a")
    assert manifest_key("b", b, "1-a") < manifest_key("b", a, "1-a")


def test_two_entries_for_one_version_are_refused() -> None:
    with pytest.raises(ValueError, match="two entries"):
        encode("b", [("k", "1-a", b"x"), ("k", "1-a", b"y")])
    with pytest.raises(ValueError, match="at least one"):
        encode("b", [])


def test_batches_stay_under_the_limit_with_at_least_one_entry_each() -> None:
    items = [("k", str(i), b"x" * n) for i, n in enumerate([5, 5, 12, 1, 1, 1])]
    groups = split_batches(items, limit=10)
    assert [[len(d) for _, _, d in g] for g in groups] == [[5, 5], [12], [1, 1, 1]]


def _segment() -> tuple[str, bytes]:
    seg = encode("bkt", [("a", "1-a", b'{"a":1}'), ("b", "1-b", b'{"b":2}')])
    return seg.name, seg.data


def _with_header(data: bytes, name: str, change: dict[str, object]) -> bytes:
    end = header_length(data, name)
    doc = json.loads(data[PREAMBLE:end]) | change
    rows = doc["entries"]
    if rows and "first" not in change:  # first/last/count follow the changed entries
        doc |= {"first": rows[0][0], "last": rows[-1][0]}
    if "count" not in change:
        doc["count"] = len(rows)
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return b"replicator-segment 1 %010d\n" % len(header) + header + data[end:]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"version": 2}, "malformed header"),
        ({"count": 3}, "malformed header"),
        ({"first": "z"}, "first/last"),
        ({"bucket": "other"}, "bucket"),
        ({"entries": []}, "malformed header"),
        ({"entries": [["a", "1-a", 0, 7, "00" * 32], ["b", "1-b", 9, 7, "00" * 32]]}, "offset"),
        (
            {
                "entries": [["b", "1-b", 0, 7, "00" * 32], ["a", "1-a", 8, 7, "00" * 32]],
                "first": "b",
                "last": "a",
            },
            "out of order",
        ),
        ({"entries": [["a", "1-a", 0, 7, "00" * 32], ["b", "1-b", 8, 8, "00" * 32]]}, "end at"),
        ({"entries": [["a", "1-a", 0, "7", "00" * 32]]}, "offset"),
        ({"entries": [["a", "1-a", 0]]}, "malformed header"),
        ({"entries": [[1, "1-a", 0, 7, "00" * 32]]}, "wrong type"),
    ],
)
def test_a_malformed_header_is_an_integrity_error_naming_the_segment(
    change: dict[str, object], why: str
) -> None:
    name, data = _segment()
    bad = _with_header(data, name, change)
    with pytest.raises(IntegrityError, match=f"segment {name}: .*{why}"):
        parse_header(bad, name, len(bad))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"x" + d[1:],  # preamble
        lambda d: d[:20],  # cut inside the preamble
        lambda d: d[:PREAMBLE] + b"x" + d[PREAMBLE + 1 :],  # header JSON
        lambda d: d[:PREAMBLE] + b"[]" + d[PREAMBLE + 2 :],
        lambda d: d[:40],  # cut inside the header
    ],
)
def test_garbage_is_an_integrity_error_naming_the_segment(mangle: object) -> None:
    name, data = _segment()
    bad = mangle(data)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=f"segment {name}"):
        parse_header(bad, name, len(data))


def test_a_flipped_byte_is_found_by_the_name_and_by_the_entry_digest() -> None:
    name, data = _segment()
    header = parse(data, name)
    entry = header.entries[1]
    bad = bytearray(data)
    bad[entry.offset + 2] ^= 1
    with pytest.raises(IntegrityError, match=f"segment {name}: its bytes do not hash"):
        parse(bytes(bad), name)
    # A ranged read of the entry alone is checked against the header.
    with pytest.raises(IntegrityError, match=f"segment {name}: entry for key 'b'"):
        check_entry(bytes(bad[entry.offset : entry.offset + entry.length]), entry, name)
    with pytest.raises(IntegrityError, match="does not match its header"):
        slice_entry(bytes(bad[:-3]), entry, name)


def test_segment_names_parse_and_others_do_not() -> None:
    d = bytes(range(32))
    assert parse_segment_key(segment_key("a/b c", d)) == ("a/b c", d)
    long = "B" * 450
    assert parse_segment_key(segment_key(long, d)) == (long, d)
    for bad in ("segments/b/01/" + "0" * 64, "segments/b/" + d.hex(), "manifests/b/k/1", "x"):
        with pytest.raises(ValueError, match="not a segment name"):
            parse_segment_key(bad)
    with pytest.raises(IntegrityError, match="not a segment name"):
        parse(b"", "segments/b/xx")
