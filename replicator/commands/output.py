"""Machine output shared by the commands: one JSON document on stdout.

Keys from a filesystem source may not be valid UTF-8 (Python carries the
undecodable bytes as lone surrogates U+DC80..U+DCFF). Strict JSON parsers
refuse lone surrogates, so such a string is written *quoted*, as git quotes
paths (``core.quotePath``): it is wrapped in double quotes, each undecodable
byte is written as ``\\xNN``, and ``\\`` and ``"`` are escaped with a
backslash. A string that is valid UTF-8 and does not itself start with ``"``
is written as it is. docs/operator-errors.md documents the rule.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def quote_text(text: str) -> str:
    """``text`` as strict JSON can carry it (the escape in the module doc)."""
    if not text.startswith('"') and not _has_surrogate(text):
        return text
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # one undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # any other lone surrogate
            out.append(f"\\u{code:04x}")
        elif ch in '\\"':
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_safe(value: Any) -> Any:
    """``value`` with every string (and dict key) passed through quote_text."""
    if isinstance(value, str):
        return quote_text(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def echo(text: str, *, err: bool = False) -> None:
    """``click.echo(text, err=err)``, byte for byte, without importing click
    (~10 % of a no-op backfill's start-up) where that is plain: the text has
    no escape sequence (click strips those off a terminal) and the stream
    encodes it. Anything else goes to click itself."""
    stream = sys.stderr if err else sys.stdout
    if stream is not None and "\x1b" not in text:
        try:
            stream.write(text + "\n")  # encoded whole before anything is written
        except UnicodeEncodeError:
            pass
        else:
            stream.flush()
            return
    import click  # noqa: PLC0415 - the rare case, as said above

    click.echo(text, err=err)


def echo_json(data: dict[str, Any]) -> None:
    """The command's one JSON document on stdout (progress goes to stderr)."""
    echo(json.dumps(json_safe(data), indent=2, ensure_ascii=False))
