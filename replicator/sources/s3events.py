"""Parsers of S3 event notifications as AWS, MinIO and Ceph RGW send them.

One Kafka message becomes a :class:`Parsed`: the ChangeEvents of its records,
plus how many records needed no replication (test events, reads, tagging,
transitions). A message that cannot be understood raises :class:`ParseError`
with a one-line reason naming the field; the consumer sends it whole to the
dead-letter topic (all or nothing, so a replay of the dead letter after a fix
repeats nothing that went through half-way). Parsing never raises anything
else, whatever the bytes (tests fuzz this).

Formats:

- **aws**: ``{"Records": [...]}`` with eventVersion 2.x; ``eventName`` without
  the ``s3:`` prefix; keys URL-encoded with ``+`` for a space; a test message
  ``{"Event": "s3:TestEvent", ...}`` when a configuration is saved.
- **minio**: the Kafka target's envelope ``{"EventName", "Key", "Records"}``;
  records like AWS's (eventSource ``minio:s3``), names with the ``s3:`` prefix,
  keys escaped the same way (Go's ``url.QueryEscape``).
- **ceph**: RGW's records (eventSource ``ceph:s3``): the size may be a string,
  ``versionId`` is empty in unversioned buckets, the ETag field may be spelled
  ``etag``, and the key is sent raw, not URL-encoded (RGW copies the object
  name as is), so it is not decoded.
- **auto**: per record, by ``eventSource`` (``ceph:s3`` is raw, anything else
  is decoded as AWS does it).
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from replicator.events import ChangeEvent, Kind, Position

Format = Literal["auto", "aws", "minio", "ceph"]
FORMATS: tuple[Format, ...] = ("auto", "aws", "minio", "ceph")

#: S3's own bound on a key (bytes of UTF-8); longer is not an S3 key.
MAX_KEY_BYTES = 1024
#: Bound on the other text fields and on the reason quoted from a message.
MAX_FIELD = 1024
_MAX_REASON = 300

# Event families, after the optional "s3:" prefix is dropped. Everything that
# writes or removes an object version is handled; what only reads, tags,
# transitions, restores or replicates leaves the bytes as they were.
_CREATED = ("ObjectCreated:", "ObjectSynced:Create")
_REMOVED = (
    "ObjectRemoved:",
    "LifecycleExpiration:",  # AWS: Delete, DeleteMarkerCreated
    "ObjectLifecycle:Expiration:Current",  # Ceph
    "ObjectLifecycle:Expiration:NonCurrent",
    "ObjectLifecycle:Expiration:DeleteMarker",
    "ObjectSynced:Delete",
    "ObjectSynced:DeletionMarkerCreated",
)
_HARMLESS = (
    "TestEvent",
    "ObjectAccessed:",
    "ObjectRestore:",
    "ObjectTagging:",
    "ObjectAcl:",
    "ObjectTransition:",
    "ObjectReplication:",
    "Replication:",
    "LifecycleTransition",
    "IntelligentTiering",
    "ObjectLifecycle:Expiration:AbortMPU",
    "ObjectLifecycle:Transition:",
    "ReducedRedundancyLostObject",
    "BucketCreated",
    "BucketRemoved",
    "Scanner:",
    "ILM:",
)

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_DIGITS = re.compile(r"\d{1,20}", re.ASCII)


_NOWHERE = Position()


class ParseError(ValueError):
    """The message cannot be normalised; ``reason`` says why (one line)."""

    def __init__(self, reason: str):
        self.reason = reason if len(reason) <= _MAX_REASON else reason[:_MAX_REASON] + "..."
        super().__init__(self.reason)


@dataclass(frozen=True, slots=True)
class Parsed:
    events: tuple[ChangeEvent, ...] = ()
    #: Records (or a whole test message) that need no replication.
    skipped: int = 0


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def decode_key(raw: str) -> str:
    """Undo S3's URL-encoding of event keys: '+' is a space, %XX a byte of UTF-8."""
    if "%" not in raw and "+" not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or not all(h in "0123456789abcdefABCDEF" for h in pair):
                raise ParseError(f"invalid %-escape {raw[i : i + 3]!r} at {i}")
            out.append(int(pair, 16))
            i += 3
            continue
        out += b" " if c == "+" else c.encode("utf-8", "surrogatepass")
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"key is not UTF-8 once decoded (byte {exc.start})") from None


def parse_time_ns(text: object) -> int:
    """ISO 8601 UTC (AWS millis, Ceph micros, any offset) to ns since the epoch."""
    if not isinstance(text, str):
        raise ParseError(f"eventTime must be a string, got {_quote(text)}")
    m = _TIME.fullmatch(text)
    if m is None:
        raise ParseError(f"eventTime is not ISO 8601: {_quote(text)}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    # Before 1970 is no S3 event time (and year 0 is no date for timegm).
    if y < 1970 or not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1]):
        raise ParseError(f"eventTime has no such date: {_quote(text)}")
    if h > 23 or mi > 59 or s > 60:
        raise ParseError(f"eventTime has no such time: {_quote(text)}")
    frac = int((m.group(7) or "0").ljust(9, "0"))
    zone = m.group(8)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
    seconds = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - (
        -offset if zone[0] == "-" else offset
    )
    return seconds * 1_000_000_000 + frac


def _family(name: str) -> Kind | None:
    """CREATED / REMOVED, None when harmless; ParseError when unknown."""
    bare = name.removeprefix("s3:")
    if bare.startswith(_CREATED):
        return Kind.CREATED
    if bare.startswith(_REMOVED):
        return Kind.REMOVED
    if bare.startswith(_HARMLESS):
        return None
    raise ParseError(f"unknown event name {_quote(name)}")


def _text(obj: dict[str, Any], field: str, where: str, *, default: str | None = None) -> str:
    value = obj.get(field, default)
    if value is None:
        raise ParseError(f"{where}.{field} is missing")
    if not isinstance(value, str):
        raise ParseError(f"{where}.{field} must be a string, got {_quote(value)}")
    if len(value) > MAX_FIELD:
        raise ParseError(f"{where}.{field} is longer than {MAX_FIELD} characters")
    return value


def _object(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ParseError(f"{where} must be a JSON object, got {_quote(obj)}")
    return obj


def _size(obj: dict[str, Any], where: str, kind: Kind) -> int:
    value = obj.get("size")
    if value is None:
        if kind is Kind.REMOVED:
            return 0  # removals carry no size (AWS, MinIO, Ceph alike)
        raise ParseError(f"{where}.size is missing")
    if isinstance(value, str) and _DIGITS.fullmatch(value):  # Ceph's size as text
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParseError(f"{where}.size must be a non-negative integer, got {_quote(value)}")
    return value


def _key(obj: dict[str, Any], where: str, *, raw: bool) -> str:
    text = _text(obj, "key", where)
    try:
        key = text if raw else decode_key(text)
    except ParseError as exc:
        raise ParseError(f"{where}.key: {exc.reason}") from None
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ParseError(f"{where}.key is not valid Unicode text") from None
    if not key or size > MAX_KEY_BYTES:
        raise ParseError(f"{where}.key must be 1 to {MAX_KEY_BYTES} bytes, got {size}")
    return key


def _raw_keys(record: dict[str, Any], fmt: Format) -> bool:
    if fmt == "ceph":
        return True
    return fmt == "auto" and record.get("eventSource") == "ceph:s3"


def _record(
    record: object, where: str, fmt: Format, source: str, position: Position
) -> ChangeEvent | None:
    """One S3 record to a ChangeEvent, or None when it needs no replication."""
    rec = _object(record, where)
    version = _text(rec, "eventVersion", where, default="2.0")
    if not version.startswith("2."):
        raise ParseError(f"{where}.eventVersion {_quote(version)} is not 2.x")
    kind = _family(_text(rec, "eventName", where))
    if kind is None:
        return None
    s3 = _object(rec.get("s3"), f"{where}.s3")
    bucket = _text(_object(s3.get("bucket"), f"{where}.s3.bucket"), "name", f"{where}.s3.bucket")
    if not bucket:
        raise ParseError(f"{where}.s3.bucket.name is empty")
    obj = _object(s3.get("object"), f"{where}.s3.object")
    at = f"{where}.s3.object"
    etag_field = "eTag" if "eTag" in obj else "etag"  # older RGW spells it etag
    return ChangeEvent(
        source=source,
        bucket=bucket,
        key=_key(obj, at, raw=_raw_keys(rec, fmt)),
        kind=kind,
        event_time_ns=_event_time(rec, where),
        size=_size(obj, at, kind),
        version_id=_text(obj, "versionId", at, default=""),
        etag=_text(obj, etag_field, at, default="").strip('"'),
        sequencer=_text(obj, "sequencer", at, default=""),
        position=position,
    )


def _event_time(rec: dict[str, Any], where: str) -> int:
    try:
        return parse_time_ns(rec.get("eventTime"))
    except ParseError as exc:
        raise ParseError(f"{where}.{exc.reason}") from None


def _load(value: bytes | None) -> dict[str, Any]:
    if value is None or not value:
        raise ParseError("empty message")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"message is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"message is not JSON: {exc}") from None
    return _object(doc, "message")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _records(doc: dict[str, Any], fmt: Format) -> list[Any]:
    if fmt == "minio" or (fmt == "auto" and "EventName" in doc):
        _text(doc, "EventName", "message")  # MinIO's envelope must be whole
        _text(doc, "Key", "message")
    records = doc.get("Records")
    if not isinstance(records, list):
        raise ParseError(f"message.Records must be a list, got {_quote(records)}")
    if not records:
        raise ParseError("message.Records is empty")
    return records


def parse_message(
    value: bytes | None,
    fmt: Format = "auto",
    *,
    source: str = "s3",
    position: Position = _NOWHERE,
) -> Parsed:
    """Normalise one Kafka message; ParseError (and nothing else) if it cannot be."""
    doc = _load(value)
    if "Records" not in doc and doc.get("Event") == "s3:TestEvent":
        return Parsed(skipped=1)  # AWS sends this when a notification is configured
    events: list[ChangeEvent] = []
    skipped = 0
    for i, record in enumerate(_records(doc, fmt)):
        event = _record(record, f"Records[{i}]", fmt, source, position)
        if event is None:
            skipped += 1
        else:
            events.append(event)
    return Parsed(tuple(events), skipped)
