"""A manifest's source identity as the JSON text the format defines, written
out directly.

The format defines these texts as ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`` of a dict (the manifest's
``object``) and of a list (what a version name hashes). Every manifest needs
both, and ``json.dumps`` built an encoder and sorted a dict each time: for a
small object that cost more than hashing it. The same bytes are produced
here with the same string escaper (json's own, in C) and the keys already in
sorted order; tests/unit/test_manifest_text.py holds them to ``json.dumps``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _q
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.store.format import SourceIdentity

#: The ``object`` of a v2 manifest, keys in sorted order.
_OBJECT_V2 = (
    '{"bucket":%s,"etag":%s,"event_time":%s,"event_time_ns":%d,"inode":%s,"key":%s,'
    '"mtime_ns":%s,"observed":%d,"sequencer":%s,"size":%d,"source":%s,"version_id":%s}'
)
#: The ``object`` of a v1 manifest (no mtime, inode or observation number).
_OBJECT_V1 = (
    '{"bucket":%s,"etag":%s,"event_time":%s,"event_time_ns":%d,"key":%s,'
    '"sequencer":%s,"size":%d,"source":%s,"version_id":%s}'
)


def _num(v: int | None) -> str:
    """An optional integer as JSON writes it."""
    return "null" if v is None else "%d" % v  # noqa: UP031


def event_time_text(event_time_ns: int) -> str:
    t = datetime.fromtimestamp(event_time_ns / 1e9, tz=UTC)
    return t.isoformat().replace("+00:00", "Z")


def object_json(i: SourceIdentity, fmt: int) -> str:
    """The text of ``_dumps(i.to_json(fmt))``."""
    when = _q(event_time_text(i.event_time_ns))
    if fmt >= 2:
        return _OBJECT_V2 % (
            _q(i.bucket),
            _q(i.etag),
            when,
            i.event_time_ns,
            _num(i.inode),
            _q(i.key),
            _num(i.mtime_ns),
            i.observed,
            _q(i.sequencer),
            i.size,
            _q(i.source),
            _q(i.version_id),
        )
    return _OBJECT_V1 % (
        _q(i.bucket),
        _q(i.etag),
        when,
        i.event_time_ns,
        _q(i.key),
        _q(i.sequencer),
        i.size,
        _q(i.source),
        _q(i.version_id),
    )


def hashed(i: SourceIdentity, removed: bool, fmt: int) -> bytes:
    """What a version name hashes: ``_dumps`` of ``[source, bucket, key,
    version_id, etag, size, event_time_ns, sequencer, removed]``, in v2
    followed by ``mtime_ns, inode, observed``."""
    text = "[%s,%s,%s,%s,%s,%d,%d,%s,%s" % (  # noqa: UP031 - the fastest formatting here
        _q(i.source),
        _q(i.bucket),
        _q(i.key),
        _q(i.version_id),
        _q(i.etag),
        i.size,
        i.event_time_ns,
        _q(i.sequencer),
        "true" if removed else "false",
    )
    if fmt != 1:
        text += ",%s,%s,%d" % (_num(i.mtime_ns), _num(i.inode), i.observed)  # noqa: UP031
    return (text + "]").encode()
