"""Object names in the replica store: packs, indexes and manifests.

A key becomes path segments by percent-escaping (UTF-8; non-UTF-8 file
names keep their bytes through surrogateescape); a leading '.' is escaped
so no segment is '.', '..' or hidden; an escaped name longer than
``PIECE`` characters is cut into pieces joined by '/+' (format version 2),
so it fits a filesystem's 255-byte name limit and still lists in order.
See docs/store-format.md §6.1.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

PACKS = "packs/"
INDEX = "index/"
MANIFESTS = "manifests/"
#: Characters kept as they are in key names; everything else is %XX (UTF-8).
_SAFE = "-_.~!$&'()*,;=:@"


#: ASCII characters outside _SAFE as ``quote`` writes them (%XX, upper case).
_ASCII_ESCAPES = str.maketrans(
    {chr(c): f"%{c:02X}" for c in range(128) if chr(c) not in _SAFE and not chr(c).isalnum()}
)


#: Names whose only character to escape is '/' (nearly every file key): one
#: C-speed match and a replace, ~5x cheaper than the translate below, which
#: looks each character up in a dict; a key is escaped several times on its
#: way (segment sort name, header-table place, held check).
_PLAIN = re.compile("[A-Za-z0-9" + re.escape(_SAFE) + "/]*")


def _quote(text: str) -> str:
    if _PLAIN.fullmatch(text):
        enc = text.replace("/", "%2F")
    elif text.isascii():  # one translate instead of quote's per-byte loop
        enc = text.translate(_ASCII_ESCAPES)
    else:
        # Filesystem sources may hand over names that are not UTF-8 (Python
        # keeps their bytes as lone surrogates); surrogateescape keeps them exact.
        enc = quote(text.encode("utf-8", "surrogateescape"), safe=_SAFE)
    # A leading '.' is escaped, so no segment is '.', '..' or a hidden name
    # (backends reserve names starting with '.replicator-' for temp files).
    return "%2E" + enc[1:] if enc.startswith(".") else enc


#: Longest escaped piece of a name kept in one path segment. Filesystems
#: refuse names over 255 bytes; the margin leaves room for a '+' marker.
PIECE = 200
#: Marks a continuation piece of a long escaped name (never produced by
#: escaping, which turns '+' into %2B, so it cannot start a plain name).
_MORE = "+"


def _split(escaped: str) -> str:
    """``escaped`` cut every PIECE characters, continuations marked ``/+``.

    The cut points depend only on the position in the escaped text, so the
    split form of a prefix is a prefix of the split form of every name that
    starts with it (``--prefix`` listing keeps working)."""
    if len(escaped) <= PIECE:
        return escaped
    pieces = [escaped[i : i + PIECE] for i in range(0, len(escaped), PIECE)]
    return ("/" + _MORE).join(pieces)


def encode_segment(text: str) -> str:
    """The stored name of ``text``: no empty segment, no leading '.'.

    Up to PIECE escaped characters it is one segment without '/'; a longer
    one is split into several segments (see ``_split``), so every segment
    fits a filesystem's 255-byte name limit whatever the key's length."""
    # A lone '%' never comes out of quoting ('%' itself becomes '%25').
    return _split(_quote(text) or "%")


def decode_segment(segment: str) -> str:
    escaped = segment.replace("/" + _MORE, "")
    if escaped == "%":
        return ""
    return unquote_to_bytes(escaped).decode("utf-8", "surrogateescape")


def pack_key(name: bytes) -> str:
    h = name.hex()
    return f"{PACKS}{h[:2]}/{h}"


def index_key(pack: bytes) -> str:
    h = pack.hex()
    return f"{INDEX}{h[:2]}/{h}"


def manifest_prefix(bucket: str, key_prefix: str = "") -> str:
    """Listing prefix for the manifests of keys starting with ``key_prefix``.

    Escaping is per character (the leading-dot rule applies to both) and
    long names are cut at fixed positions, so the stored prefix is a prefix
    of every stored key name that starts with ``key_prefix``, and of no other."""
    return f"{MANIFESTS}{encode_segment(bucket)}/{_split(_quote(key_prefix))}"


def manifest_key(bucket: str, key: str, version_name: str) -> str:
    return f"{MANIFESTS}{encode_segment(bucket)}/{encode_segment(key)}/{version_name}"


def _take_name(parts: list[str]) -> str | None:
    """Pop one (possibly split) escaped name off the front of ``parts``."""
    if not parts or parts[0].startswith(_MORE) or not parts[0]:
        return None
    pieces = [parts.pop(0)]
    while parts and parts[0].startswith(_MORE):
        pieces.append(parts.pop(0)[len(_MORE) :])
    # Only names longer than PIECE are split, always at PIECE characters.
    if any(len(p) != PIECE for p in pieces[:-1]) or (len(pieces) > 1 and not pieces[-1]):
        return None
    return ("/" + _MORE).join(pieces)


def parse_manifest_key(store_key: str) -> tuple[str, str, str]:
    """(bucket, key, version name) of a manifest object name."""
    parts = store_key.removeprefix(MANIFESTS).split("/")
    version = parts.pop() if len(parts) >= 3 else ""
    bucket = _take_name(parts)
    key = _take_name(parts)
    if not store_key.startswith(MANIFESTS) or not version or bucket is None or key is None or parts:
        raise ValueError(f"not a manifest name: {store_key!r}")
    try:
        return decode_segment(bucket), decode_segment(key), version
    except UnicodeDecodeError as exc:  # '%' followed by no hex: not our escaping
        raise ValueError(f"not a manifest name: {store_key!r}") from exc
