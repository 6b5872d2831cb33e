"""``@record``: a dataclass that is cheap to define.

``dataclasses.dataclass`` writes each method it adds (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, a frozen class's ``__setattr__`` and
``__delattr__``) as source text and compiles it with ``exec``: about 1 ms
per class here (2-3 ms for a frozen one), and a ``replicator backfill``
defines ~36 of them before it does anything (~20 % of its start-up,
docs/performance.md "boot"). Python 3.13 compiles them in one piece; this
is 3.11.

``record`` takes the same arguments for what replicator uses (``frozen``,
``slots``, ``eq``; fields with defaults, ``default_factory``, ``init``,
``repr``, ``compare``, ``hash``, ``kw_only``; ``__post_init__``) and keeps
what code relies on: the class *is* a dataclass (``dataclasses.fields``,
``replace``, ``asdict``, ``is_dataclass`` work), equality and hashing follow
the same rules (same class and equal compared fields; frozen classes hash,
mutable ones are unhashable unless they define ``__hash__``), a frozen
instance refuses assignment with ``FrozenInstanceError``, and it copies and
pickles. Only ``__init__`` is compiled (it runs for every object, so it
stays straight-line code), and only when the class's first instance is
made; the other methods are shared functions over the class's field names
(``operator.attrgetter`` builds the compared tuple in C).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def _init_source(cls: type, frozen: bool) -> tuple[str, dict[str, Any]]:
    """The text of ``__init__`` and the names it refers to."""
    names: dict[str, Any] = {"__MISSING": _MISSING, "__setattr": object.__setattr__}
    params: list[str] = []
    kw_only: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        if f.default is not _MISSING:
            names[f"__d_{f.name}"] = f.default
        if f.default_factory is not _MISSING:
            names[f"__f_{f.name}"] = f.default_factory
        if f.init:
            value = f.name
            if f.default is not _MISSING:
                param = f"{f.name}=__d_{f.name}"
            elif f.default_factory is not _MISSING:
                param = f"{f.name}=__MISSING"
                value = f"__f_{f.name}() if {f.name} is __MISSING else {f.name}"
            else:
                param = f.name
            (kw_only if f.kw_only is True else params).append(param)
        elif f.default_factory is not _MISSING:
            value = f"__f_{f.name}()"
        elif f.default is not _MISSING:
            value = f"__d_{f.name}"
        else:
            continue  # init=False without a default: left unset, as dataclass does
        assign = f"__setattr(self, {f.name!r}, {value})" if frozen else f"self.{f.name} = {value}"
        body.append(f"  {assign}")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *kw_only] if kw_only else [])])
    text = f"def __init__({signature}) -> None:\n" + ("\n".join(body) or "  pass") + "\n"
    return text, names


def _make_init(cls: type, frozen: bool) -> Callable[..., None]:
    text, names = _init_source(cls, frozen)
    namespace: dict[str, Any] = {}
    exec(text, names, namespace)  # noqa: S102 - our own text, as dataclasses does
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _first_init(cls: type, frozen: bool) -> Callable[..., None]:
    """An ``__init__`` that compiles the real one when the class's first
    instance is made, and puts it in its place: a process defines every
    record it imports but builds instances of only some of them (a no-op
    backfill: the write path's records are never built). Until then the
    class's signature reads ``(*args, **kwargs)``."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _make_init(cls, frozen)
        setattr(cls, "__init__", init)  # noqa: B010 - what a call finds from now on
        init(self, *args, **kwargs)

    return __init__


def _methods(cls: type, frozen: bool, eq: bool) -> dict[str, Any]:
    fields = dataclasses.fields(cls)
    shown = tuple(f.name for f in fields if f.repr)
    compared = tuple(f.name for f in fields if f.compare)
    hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    key = attrgetter(*compared) if compared else (lambda _self: ())
    hash_key = attrgetter(*hashed) if hashed else (lambda _self: ())
    field_names = frozenset(f.name for f in fields)
    owner: type[Any] = cls

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{self.__class__.__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is self.__class__:
            return bool(key(self) == key(other))
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(hash_key(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is owner or name in field_names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(owner, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is owner or name in field_names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(owner, self).__delattr__(name)

    out: dict[str, Any] = {"__init__": _first_init(cls, frozen), "__repr__": __repr__}
    if eq:
        out["__eq__"] = __eq__
        explicit = cls.__dict__.get("__hash__", _MISSING)
        if explicit is _MISSING or explicit is None:
            # dataclass's rule: frozen and eq -> hashable by the compared
            # fields; eq alone -> unhashable (a mutable key would move).
            out["__hash__"] = __hash__ if frozen else None
    if frozen:
        out["__setattr__"] = __setattr__
        out["__delattr__"] = __delattr__
    return out


def _state(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _set_state(self: Any, state: list[Any]) -> None:
    for f, value in zip(dataclasses.fields(self), state, strict=True):
        object.__setattr__(self, f.name, value)  # frozen: as its __init__ does


def _build(cls: type[T], frozen: bool, slots: bool, eq: bool) -> type[T]:
    if cls.__doc__ is None:
        # dataclass would write the signature here through inspect (~0.1 ms).
        cls.__doc__ = cls.__name__
    for name in ("__init__", "__repr__", "__eq__", "__setattr__", "__delattr__"):
        if name in cls.__dict__ and (name != "__eq__" or eq):
            raise TypeError(f"record {cls.__name__} defines {name}: use @dataclass")
    # No method written here: the fields, replace(), asdict() and slots.
    cls = dataclasses.dataclass(cls, init=False, repr=False, eq=False, slots=slots)
    for name, value in _methods(cls, frozen, eq).items():
        setattr(cls, name, value)
    if frozen and slots:
        # Copying and unpickling a slotted object assign its slots with
        # setattr, which a frozen record refuses.
        setattr(cls, "__getstate__", _state)  # noqa: B010
        setattr(cls, "__setstate__", _set_state)  # noqa: B010
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...


@overload
def record(
    *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def record(
    cls: type[T] | None = None, /, *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> type[T] | Callable[[type[T]], type[T]]:
    """``@dataclass`` with the same meaning, defined without compiling all
    but ``__init__`` (module doc)."""

    def wrap(c: type[T]) -> type[T]:
        return _build(c, frozen, slots, eq)

    return wrap if cls is None else wrap(cls)


__all__ = ["record"]
