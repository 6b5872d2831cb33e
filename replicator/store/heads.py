"""A manifest's *head*: what the held check compares, without its chunk list.

The head of a manifest is (removed, source, bucket, key, version id, ETag,
size, event time, mtime, inode, observation number): enough to tell whether
a listed version is the one a peer already holds, and which observation
number a new manifest of it takes. ``manifest_head`` parses it from a
manifest's bytes (only the ``object`` member: a large file's manifest lists
thousands of chunks); a format 3 peer keeps it beside each entry in its
header table (store/segment_cache.py), so that a re-run parses nothing.
"""

from __future__ import annotations

import json

from replicator.store.format import Manifest, SourceIdentity

#: removed, source, bucket, key, version id, ETag, size, event time (ns),
#: mtime (ns), inode, observation number.
Head = tuple[bool, str, str, str, str, str, int, int, int | None, int | None, int]
#: Where a manifest's ``kind`` and ``object`` are: every writer serialises
#: with sorted keys (chunker, digest, kind, object, runs, version), and an
#: unescaped '"' cannot follow ',' inside a JSON string, so these markers
#: only occur between the top-level members.
_KIND = b',"kind":"'
_OBJECT_START = b'","object":{'
_OBJECT_END = b'},"runs":['
_KINDS = {b"created": False, b"removed": True}
#: How a complete manifest ends (a torn one is parsed whole, and refused).
_ENDS = (b'],"version":2}', b'],"version":1}')


def head_of(removed: bool, i: SourceIdentity) -> Head:
    return (
        removed,
        i.source,
        i.bucket,
        i.key,
        i.version_id,
        i.etag,
        i.size,
        i.event_time_ns,
        i.mtime_ns,
        i.inode,
        i.observed,
    )


def manifest_head(data: bytes) -> tuple[bool, SourceIdentity]:
    """(removed, identity) of a manifest's bytes, parsing only its ``object``
    (a re-run's held check reads one manifest per file; a large file's lists
    thousands of chunks). Bytes not laid out as written are parsed whole, so
    a malformed or torn manifest is still an IntegrityError (damage inside
    the chunk list or the digest is verify's to find)."""
    kind_at = data.find(_KIND)
    start = data.find(_OBJECT_START, kind_at)
    end = data.find(_OBJECT_END, start)
    removed = _KINDS.get(data[kind_at + len(_KIND) : start]) if kind_at > 0 else None
    if (
        removed is not None
        and end > 0
        and data.startswith(b'{"chunker":[')
        and data.endswith(_ENDS)
    ):
        try:
            return removed, SourceIdentity.from_json(json.loads(data[start + 11 : end + 1]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # not the layout it looked like: the whole parse says what is wrong
    m = Manifest.from_bytes(data)
    return m.removed, m.identity
