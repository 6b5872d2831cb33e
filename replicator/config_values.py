"""Checks of single values for the configuration tables (``config_base``):
pydantic's lax rules and messages for ``str``, ``int``, ``float``, ``bool``,
``Path``, ``Literal[...]`` and bounds, and reading an annotation's text."""

from __future__ import annotations

import builtins
import operator
import typing
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Any

#: Per bound: the test a value passes and the words of its message.
_BOUNDS: dict[str, tuple[Callable[[Any, float], bool], str]] = {
    "gt": (operator.gt, "greater than"),
    "ge": (operator.ge, "greater than or equal to"),
    "lt": (operator.lt, "less than"),
    "le": (operator.le, "less than or equal to"),
}


#: What pydantic's lax bool accepts besides True and False.
_BOOLS: dict[str | int, bool] = {
    **dict.fromkeys(("true", "t", "yes", "y", "on", "1", 1), True),
    **dict.fromkeys(("false", "f", "no", "n", "off", "0", 0), False),
}


def choices(values: tuple[object, ...]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def number(kind: type, value: object) -> object:
    """pydantic's lax int/float: integral floats and numeric strings pass."""
    name, article = ("integer", "an") if kind is int else ("number", "a")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            problem = f"Input should be a valid {name}, unable to parse string as {article} {name}"
            raise ValueError(problem) from None
    if not isinstance(value, int | float):  # bool is an int here, as in pydantic
        raise ValueError(f"Input should be a valid {name}")
    if kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("Input should be a valid integer, got a number with a fractional part")
    return int(value)


def scalar(kind: type, value: object) -> object:
    if kind is int or kind is float:
        return number(kind, value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("Input should be a valid string")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else value
        if isinstance(word, str | int) and word in _BOOLS:
            return _BOOLS[word]
        raise ValueError("Input should be a valid boolean")
    if kind is Path:
        if not isinstance(value, str | Path):
            raise ValueError("Input is not a valid path for <class 'pathlib.Path'>")
        return Path(value)
    raise TypeError(f"no check for {kind!r}")  # a table declared with an unknown type


def literal(args: tuple[object, ...], value: object) -> object:
    """One of the declared values; an integral float is its int (pydantic's rule)."""
    for arg in args:
        same = type(value) is type(arg) or (isinstance(value, float) and isinstance(arg, int))
        if value == arg and same:
            return arg
    raise ValueError(f"Input should be {choices(args)}")


def split(text: str, sep: str) -> list[str]:
    """``text`` cut at each ``sep`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def literal_value(text: str) -> object:
    """A value of ``Literal[...]``: a quoted string or an int."""
    return text[1:-1] if text[:1] in ("'", '"') else int(text)


def kind_of(note: str, space: dict[str, Any]) -> Any:
    """What an annotation's text asks for: a type, a table, or a tuple
    ``("literal", values)``, ``("list", kind)``, ``("union", kinds)``.
    Read by hand: evaluating them (a compile each) made a load 2-4 ms, now 1.6."""
    parts = split(note, "|")
    if len(parts) > 1:
        return ("union", tuple(kind_of(p, space) for p in parts))
    if note.endswith("]"):
        head, inner = note[:-1].split("[", 1)
        if head == "list":
            return ("list", kind_of(inner, space))
        if head == "Literal":
            return ("literal", tuple(literal_value(v) for v in split(inner, ",")))
    if note == "None":
        return type(None)
    found = space[note] if note in space else getattr(builtins, note)
    if isinstance(found, UnionType):  # an alias such as ``A | B``
        return ("union", typing.get_args(found))
    return found


def bounded(bounds: dict[str, float], min_length: int, value: Any) -> Any:
    """``value`` if it is within ``bounds`` (gt, ge, lt, le) and ``min_length``."""
    for name, bound in bounds.items():
        test, words = _BOUNDS[name]
        if not test(value, bound):
            shown = int(bound) if float(bound).is_integer() else bound
            raise ValueError(f"Input should be {words} {shown}")
    if min_length and len(value) < min_length:
        raise ValueError(
            f"List should have at least {min_length} item after validation, not {len(value)}"
        )
    return value
