"""The --json escape for strings that are not valid UTF-8 (docs/operator-errors.md)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.commands.output import json_safe, quote_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain/key.bin", "plain/key.bin"),
        ("日本", "日本"),
        ("caf\udce9", '"caf\\xe9"'),
        ('"quoted', '"\\"quoted"'),  # starts with a quote: quoted, so never ambiguous
        ('a"b\\c', 'a"b\\c'),  # valid UTF-8 not starting with '"': as it is
        ('x\udcff\\"', '"x\\xff\\\\\\""'),
        ("\ud800", '"\\ud800"'),
    ],
)
def test_quote_text(text: str, shown: str) -> None:
    assert quote_text(text) == shown


def _unquote(shown: str) -> bytes:
    """The reader's side of the rule, written independently."""
    if not shown.startswith('"'):
        return shown.encode()
    out, body, i = bytearray(), shown[1:-1], 0
    while i < len(body):
        if body[i] == "\\" and body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif body[i] == "\\":
            out += body[i + 1].encode()
            i += 2
        else:
            out += body[i].encode()
            i += 1
    return bytes(out)


@given(st.binary(max_size=40))
def test_every_file_name_round_trips_through_strict_json(name: bytes) -> None:
    text = name.decode("utf-8", "surrogateescape")
    document = json.dumps(json_safe({"key": text, "keys": [text]}), ensure_ascii=False)
    document.encode("utf-8")  # strict: no lone surrogates anywhere
    shown = json.loads(document)["key"]
    assert _unquote(shown) == name
