"""Segments (store format 3): the manifests of many keys in one object.

Vocabulary (docs/store-format.md §13 is the specification):

- *segment*: ``segments/<escaped bucket>/<hh>/<blake3-hex>``, named by the
  BLAKE3 of its bytes, write-once (put-if-absent). It holds the manifests of
  one bucket, each the unchanged version-2 manifest bytes.
- *entry*: one manifest inside a segment, named by (key, version name).
  Entries are sorted by their *sort name* ``<escaped key>/<version name>``:
  the name a version-2 store gives the manifest under ``manifests/<bucket>/``,
  so a segment lists in the order a version-2 listing does.
- *header*: the table at the start of a segment: per entry its key, version
  name, offset, length and BLAKE3, so one entry is one ranged read that can
  be checked on its own (the segment's name only checks the whole).

Bytes of a segment::

    replicator-segment 1 <header length, 10 digits>\\n   (32 bytes, the preamble)
    <header JSON>\\n
    <entry 0>\\n<entry 1>\\n …                             (the body)

Offsets in the header count from the start of the body. Every part is a
line (manifests are JSON without raw newlines), so ``sed -n '3,$p'`` prints
one manifest per line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from replicator._native import blake3_digest
from replicator.errors import IntegrityError
from replicator.records import record
from replicator.store.names import _take_name, decode_segment, encode_segment

SEGMENTS = "segments/"
SEGMENT_VERSION = 1
#: ``replicator-segment 1 `` + 10 digits + newline.
PREAMBLE = 32
_PREAMBLE = re.compile(rb"replicator-segment 1 ([0-9]{10})\n")
#: Entry bytes above which a group commit starts another segment (the
#: design's bound: a reader may hold a whole segment in memory).
MAX_SEGMENT = 8 * 1024 * 1024
#: What a reader fetches first of a segment: the preamble and, for segments
#: of up to a few hundred entries, the whole header.
HEADER_READ = 128 * 1024
_DIGEST_HEX = re.compile(r"[0-9a-f]{64}")


@record(frozen=True, slots=True)
class SegmentEntry:
    """One manifest inside a segment; ``offset`` counts from the segment's start."""

    key: str
    version_name: str
    offset: int
    length: int
    digest: bytes  # BLAKE3 of the entry's bytes


@record(frozen=True, slots=True)
class SegmentHeader:
    bucket: str
    entries: tuple[SegmentEntry, ...]
    #: Bytes of the whole segment (preamble, header and body).
    size: int


@record(frozen=True, slots=True)
class Segment:
    """An encoded segment: its store name, bytes and header."""

    name: str
    data: bytes
    header: SegmentHeader


def sort_name(key: str, version_name: str) -> str:
    """The entry's place: its manifest's name in a version-2 store, below the bucket."""
    return f"{encode_segment(key)}/{version_name}"


def segment_prefix(bucket: str | None = None) -> str:
    return SEGMENTS if bucket is None else f"{SEGMENTS}{encode_segment(bucket)}/"


def segment_key(bucket: str, digest: bytes) -> str:
    h = digest.hex()
    return f"{segment_prefix(bucket)}{h[:2]}/{h}"


def parse_segment_key(store_key: str) -> tuple[str, bytes]:
    """(bucket, digest) of a segment name; ValueError for any other name."""
    parts = store_key.removeprefix(SEGMENTS).split("/")
    bucket = _take_name(parts)
    if (
        not store_key.startswith(SEGMENTS)
        or bucket is None
        or len(parts) != 2
        or not _DIGEST_HEX.fullmatch(parts[1])
        or parts[0] != parts[1][:2]
    ):
        raise ValueError(f"not a segment name: {store_key!r}")
    try:
        return decode_segment(bucket), bytes.fromhex(parts[1])
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a segment name: {store_key!r}") from exc


# ----------------------------------------------------------------- encode


def encode(bucket: str, items: Iterable[tuple[str, str, bytes]]) -> Segment:
    """The segment holding ``items`` (key, version name, manifest bytes).

    Deterministic: the same items in any order give the same bytes (and so
    the same name). Two items with one (key, version name) are refused."""
    return encode_named(bucket, [(sort_name(k, v), k, v, data) for k, v, data in items])


def encode_named(bucket: str, items: Iterable[tuple[str, str, str, bytes]]) -> Segment:
    """``encode`` of items that carry their sort name already: (sort name,
    key, version name, manifest bytes), the sort name ``sort_name(key,
    version name)`` (a group commit has it from its lookup)."""
    ordered = sorted(items)
    if not ordered:
        raise ValueError("a segment holds at least one entry")
    rows: list[list[Any]] = []
    digests: list[bytes] = []
    body = bytearray()
    for i, (place, key, version, data) in enumerate(ordered):
        if i and place == ordered[i - 1][0]:
            raise ValueError(f"two entries for key {key!r} version {version}")
        digests.append(blake3_digest(data))
        rows.append([key, version, len(body), len(data), digests[-1].hex()])
        body += data
        body += b"\n"
    header = _header_json(bucket, rows)
    data = b"replicator-segment 1 %010d\n" % len(header) + header + b"\n" + body
    name = segment_key(bucket, blake3_digest(data))
    start = PREAMBLE + len(header) + 1
    entries = tuple(
        SegmentEntry(k, v, start + o, n, d)
        for (k, v, o, n, _), d in zip(rows, digests, strict=True)
    )
    return Segment(name, data, SegmentHeader(bucket, entries, len(data)))


def _header_json(bucket: str, rows: list[list[Any]]) -> bytes:
    # The store's JSON rules (docs/store-format.md §2): sorted keys, no
    # whitespace, ASCII escapes (non-UTF-8 file names stay exact).
    doc = {
        "format": "replicator-segment",
        "version": SEGMENT_VERSION,
        "bucket": bucket,
        "count": len(rows),
        "first": rows[0][0],
        "last": rows[-1][0],
        "entries": rows,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def split_batches(
    items: list[tuple[str, str, bytes]], limit: int = MAX_SEGMENT
) -> list[list[tuple[str, str, bytes]]]:
    """``items`` cut into groups of at most ``limit`` entry bytes (at least one each)."""
    groups: list[list[tuple[str, str, bytes]]] = []
    size = 0
    for item in items:
        if not groups or size + len(item[2]) > limit:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item[2])
    return groups


# ----------------------------------------------------------------- decode


def header_length(data: bytes, name: str) -> int:
    """Bytes of the preamble and header (the body starts one byte later)."""
    m = _PREAMBLE.match(data[:PREAMBLE])
    if m is None:
        raise IntegrityError(f"segment {name}: no segment preamble (not a replicator segment)")
    return PREAMBLE + int(m[1])


def parse_header(data: bytes, name: str, size: int) -> SegmentHeader:
    """The header of segment ``name`` (``size`` bytes long), from ``data``:
    its first bytes, at least ``header_length`` + 1 of them.

    Anything but a well-formed header whose entries are sorted, contiguous
    and end exactly at ``size`` raises IntegrityError naming the segment."""
    end = header_length(data, name)
    if len(data) <= end or data[end : end + 1] != b"\n":
        raise IntegrityError(f"segment {name}: header cut short or not followed by a newline")
    try:
        doc = json.loads(data[PREAMBLE:end])
        bucket, rows = doc["bucket"], doc["entries"]
        ok = (
            doc["format"] == "replicator-segment"
            and doc["version"] == SEGMENT_VERSION
            and isinstance(bucket, str)
            and isinstance(rows, list)
            and doc["count"] == len(rows)
        )
        if not ok or not rows:
            raise ValueError("not a version 1 segment header with entries")
        if bucket != _name_bucket(name):
            raise ValueError(f"it holds bucket {bucket!r}, its name another")
        if (doc["first"], doc["last"]) != (rows[0][0], rows[-1][0]):
            raise ValueError("first/last do not match the entries")
        entries = _entries(rows, end + 1, size)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IntegrityError(f"segment {name}: header is not valid JSON: {exc}") from exc
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise IntegrityError(f"segment {name}: malformed header: {exc}") from exc
    return SegmentHeader(bucket, entries, size)


def _entries(rows: list[Any], start: int, size: int) -> tuple[SegmentEntry, ...]:
    out: list[SegmentEntry] = []
    pos, last = 0, ""
    for row in rows:
        key, version, offset, length, digest = row
        if not (isinstance(key, str) and isinstance(version, str) and isinstance(digest, str)):
            raise TypeError(f"entry {row!r} has fields of the wrong type")
        if type(offset) is not int or type(length) is not int or offset != pos or length < 0:
            raise ValueError(f"entry {key!r} {version}: offset {offset!r} where {pos} was due")
        place = sort_name(key, version)
        if place <= last or not _DIGEST_HEX.fullmatch(digest):
            raise ValueError(f"entry {key!r} {version}: out of order, repeated or bad digest")
        out.append(SegmentEntry(key, version, start + offset, length, bytes.fromhex(digest)))
        pos, last = offset + length + 1, place
    if start + pos != size:
        raise ValueError(f"entries end at byte {start + pos}, the segment has {size}")
    return tuple(out)


def check_entry(data: bytes, entry: SegmentEntry, name: str) -> bytes:
    """``data`` (an entry read alone) if it is that entry's bytes."""
    if len(data) != entry.length or blake3_digest(data) != entry.digest:
        raise IntegrityError(
            f"segment {name}: entry for key {entry.key!r} version {entry.version_name} "
            f"does not match its header ({len(data)} of {entry.length} bytes, or BLAKE3)"
        )
    return data


def slice_entry(data: bytes, entry: SegmentEntry, name: str) -> bytes:
    """The checked bytes of ``entry`` from the whole segment ``data``."""
    return check_entry(data[entry.offset : entry.offset + entry.length], entry, name)


def _name_bucket(name: str) -> str:
    try:
        return parse_segment_key(name)[0]
    except ValueError as exc:
        raise IntegrityError(str(exc)) from exc


def parse(data: bytes, name: str) -> SegmentHeader:
    """The header of the whole segment ``data``, after checking that its
    bytes hash to its name and that every entry ends in a newline."""
    try:
        _, digest = parse_segment_key(name)
    except ValueError as exc:
        raise IntegrityError(str(exc)) from exc
    if blake3_digest(data) != digest:
        raise IntegrityError(f"segment {name}: its bytes do not hash to its name")
    header = parse_header(data, name, len(data))
    for e in header.entries:
        if data[e.offset + e.length : e.offset + e.length + 1] != b"\n":
            raise IntegrityError(f"segment {name}: entry {e.key!r} not followed by a newline")
    return header
