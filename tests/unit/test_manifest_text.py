"""Manifest bytes, version names and stored key names written out directly
(store/identity_text.py, store/names.py) are exactly what the format's
definition (``json.dumps`` with sorted keys, ``urllib.parse.quote``) gives:
a replay must never change a manifest's bytes or name."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams, blake3_digest
from replicator.store import identity_text
from replicator.store.format import ChunkRef, Manifest, PackRun, SourceIdentity
from replicator.store.names import PIECE, encode_segment, manifest_key
from replicator.store.versions import sequencer_field

_SAFE = "-_.~!$&'()*,;=:@"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _reference_name(i: SourceIdentity, removed: bool, fmt: int) -> str:
    ident: list[Any] = [i.source, i.bucket, i.key, i.version_id, i.etag, i.size]
    ident += [i.event_time_ns, i.sequencer, removed]
    if fmt == 1:
        return f"{i.event_time_ns:020d}-{blake3_digest(_dumps(ident)).hex()[:24]}"
    ident += [i.mtime_ns, i.inode, i.observed]
    digest = blake3_digest(_dumps(ident)).hex()[:24]
    return f"{i.event_time_ns:020d}-{sequencer_field(i.sequencer)}-{i.observed:020d}-{digest}"


def _reference_segment(text: str) -> str:
    enc = quote(text.encode("utf-8", "surrogateescape"), safe=_SAFE)
    enc = ("%2E" + enc[1:] if enc.startswith(".") else enc) or "%"
    return "/+".join(enc[i : i + PIECE] for i in range(0, len(enc), PIECE))


# Any text a source can hand over: unicode, control characters, lone
# surrogates (non-UTF-8 file names), quotes and backslashes.
_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=24) | st.text(
    alphabet='ab/. %+"\\\x00\udc80é', max_size=12
)
_maybe = st.none() | st.integers(0, 1 << 63)
_identities = st.builds(
    SourceIdentity,
    _text,
    _text,
    _text,
    _text,
    _text,
    st.integers(0, 1 << 50),
    st.integers(0, 4_000_000_000 * 10**9),
    st.text("0123456789ABCDEF", max_size=20) | _text,
    _maybe,
    _maybe,
    st.integers(0, 1 << 40),
)


@given(_identities, st.booleans(), st.sampled_from([1, 2]))
def test_identity_texts_are_what_json_dumps_writes(
    ident: SourceIdentity, removed: bool, fmt: int
) -> None:
    assert identity_text.object_json(ident, fmt).encode() == _dumps(ident.to_json(fmt))
    assert ident.version_name(removed, fmt) == _reference_name(ident, removed, fmt)
    m = Manifest(ident, removed, b"\x07" * 32, ChunkerParams(), (), format_version=fmt)
    body = json.loads(m.to_bytes())
    assert _dumps(body) == m.to_bytes()
    assert body["object"] == ident.to_json(fmt)


@given(_text | st.text(max_size=3 * PIECE))
def test_stored_names_are_what_quote_writes(text: str) -> None:
    assert encode_segment(text) == _reference_segment(text)


# Names made only of characters kept as they are and '/' (the fast path:
# one match and a replace), with leading dots and long names among them.
_plain = st.text(alphabet="aZ09/." + _SAFE, max_size=3 * PIECE)


@given(_plain)
def test_plain_names_are_what_quote_writes(text: str) -> None:
    assert encode_segment(text) == _reference_segment(text)


def test_a_file_keys_stored_name_costs_about_a_microsecond() -> None:
    key = "d0003/sub4/file-01234.bin"
    n = 20000
    started = time.perf_counter()
    for _ in range(n):
        encode_segment(key)
    per = (time.perf_counter() - started) / n * 1e6
    assert encode_segment(key) == _reference_segment(key)
    print(f"stored name of a file key: {per:.2f} us")


def test_a_small_objects_manifest_costs_microseconds_to_name_and_write() -> None:
    ident = SourceIdentity("fs:/src", "", "dir/sub/file-000123.bin", "", "e", 9000, 17 * 10**17)
    run = PackRun(b"\x02" * 32, 1234, (ChunkRef(b"\x03" * 32, 9000, 9000),))
    m = Manifest(ident, False, b"\x01" * 32, ChunkerParams(), (run,))
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        m.to_bytes()
        m.store_key()
    per = (time.perf_counter() - started) / n * 1e6
    assert m.store_key() == manifest_key("", ident.key, _reference_name(ident, False, 2))
    print(f"bytes + name of a one-chunk manifest: {per:.1f} us")
