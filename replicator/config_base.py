"""What every configuration table shares (``replicator.config`` assembles them).

A table is a class of annotated fields, each described where it is declared,
validated once when it is built: unknown keys are refused, values never change
once read, and every problem is reported with its key (``Invalid``). The
messages are pydantic's (the tables were pydantic models), but nothing here
imports pydantic: building its models and importing it were a third of every
command's start-up (docs/performance.md "Start-up, re-runs and updates").
Types come from the annotations, resolved once per class on its first use:
``str``, ``int``, ``float``, ``bool``, ``Path``, ``Literal[...]``, ``X | None``,
``list[X]``, a table, or a union of tables told apart by their ``type`` key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from replicator.config_values import bounded, choices, kind_of, literal, scalar

if TYPE_CHECKING:
    from typing import Self

    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: object) -> Callable[[type], type]:
        return lambda cls: cls


#: A location in the document: table keys and list indexes.
Loc = tuple[int | str, ...]


class Invalid(ValueError):
    """Every problem of one document, each with its location."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{where(loc)}: {msg}" for loc, msg in problems))


def where(loc: Loc) -> str:
    """``destinations[1].path`` for ``("destinations", 1, "path")``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class Setting:
    """One key of a table: its default, bounds and description."""

    __slots__ = ("after", "blank", "bounds", "default", "doc", "factory", "min_length", "parse")

    def __init__(
        self,
        *,
        default: object,
        factory: Callable[[], object] | None = None,
        doc: str = "",
        bounds: dict[str, float] | None = None,
        min_length: int = 0,
        blank: bool = True,
        parse: Callable[[object], object] | None = None,
        after: Callable[[Any], object] | None = None,
    ):
        self.default, self.factory, self.doc = default, factory, doc
        self.bounds, self.min_length, self.blank = bounds or {}, min_length, blank
        self.parse, self.after = parse, after


_REQUIRED: Any = object()


def setting(  # one keyword per constraint, as pydantic's Field
    *,
    default: Any = _REQUIRED,
    default_factory: Callable[[], Any] | None = None,
    doc: str = "",
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_length: int = 0,
    blank: bool = True,
    parse: Callable[[Any], Any] | None = None,
    after: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a key. ``blank=False`` refuses an empty or all-blank string
    (before it becomes ``Path('.')``); ``parse`` replaces the annotation's
    check (its ValueError is the key's message, its Invalid names keys
    inside); ``after`` checks the valid value further (pydantic's field
    validator)."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return Setting(
        default=default,
        factory=default_factory,
        doc=doc,
        bounds=bounds,
        min_length=min_length,
        blank=blank,
        parse=parse,
        after=after,
    )


_BAD: Any = object()


def _tag(options: tuple[type[Table], ...], value: dict[str, Any]) -> type[Table]:
    """The table of a union chosen by the document's ``type`` key."""
    tags = {c._types()["type"][1][0]: c for c in options}
    if "type" not in value:
        raise ValueError(f"'type' is missing: set type = {choices(tuple(tags))}")
    if value["type"] not in tags:
        raise ValueError(f"type = {value['type']!r} is not allowed: use {choices(tuple(tags))}")
    return tags[value["type"]]


def check(kind: Any, value: object, loc: Loc, errors: list[tuple[Loc, str]]) -> object:
    """``value`` as ``kind``; on a problem, note it at ``loc`` and return _BAD."""
    try:
        return _check(kind, value, loc, errors)
    except ValueError as exc:
        errors.append((loc, str(exc)))
        return _BAD


def _items(kind: Any, value: object, loc: Loc, errors: list[tuple[Loc, str]]) -> object:
    if not isinstance(value, list | tuple):
        raise ValueError("Input should be a valid list")
    items = [check(kind, v, (*loc, i), errors) for i, v in enumerate(value)]
    return _BAD if any(v is _BAD for v in items) else items


def _union(args: tuple[Any, ...], value: object, loc: Loc, errors: list[tuple[Loc, str]]) -> object:
    """``X | None``, or tables told apart by their ``type`` key."""
    if value is None and type(None) in args:
        return None
    options = tuple(a for a in args if a is not type(None))
    if len(options) == 1:
        return _check(options[0], value, loc, errors)
    if isinstance(value, options):
        return value
    if not isinstance(value, dict):
        raise ValueError("Input should be a valid dictionary or object to extract fields from")
    return _check(_tag(options, value), value, loc, errors)


def _check(kind: Any, value: object, loc: Loc, errors: list[tuple[Loc, str]]) -> object:
    if isinstance(kind, tuple):  # what _kind made of ``Literal[..]``, ``list[..]``, ``A | B``
        shape, args = kind
        if shape == "literal":
            return literal(args, value)
        if shape == "list":
            return _items(args, value, loc, errors)
        return _union(args, value, loc, errors)
    if isinstance(kind, type) and issubclass(kind, Table):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"Input should be a valid dictionary or instance of {kind.__name__}")
        return kind.build(value, loc, errors)
    return scalar(kind, value)


def _field(spec: Setting, kind: Any, value: object, loc: Loc, errors: list[tuple[Loc, str]]) -> Any:
    """One key: blank check, type (or the key's own parse), bounds."""
    try:
        if not spec.blank and isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        if spec.parse is not None:
            return spec.parse(value)
        out = _check(kind, value, loc, errors)
        if out is _BAD or out is None:  # bounds hold for a value, not for "unset"
            return out
        out = bounded(spec.bounds, spec.min_length, out)
        return out if spec.after is None else spec.after(out)
    except Invalid as exc:
        errors.extend(((*loc, *inner), msg) for inner, msg in exc.problems)
        return _BAD
    except ValueError as exc:
        errors.append((loc, str(exc).removeprefix("Value error, ")))
        return _BAD


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(setting,))
class Table:
    """A table: unknown keys are refused, values never change once read.

    ``_after`` (optional) checks the table as a whole once every key is
    valid; its ValueError is reported at the table's own location."""

    #: Per key: its declaration and its type (resolved on first use).
    model_fields: ClassVar[dict[str, Setting]]
    _kinds: ClassVar[dict[str, Any] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, Setting] = {}
        for klass in reversed(cls.__mro__):
            for name, note in vars(klass).get("__annotations__", {}).items():
                if "ClassVar" in str(note):
                    continue
                spec = klass.__dict__.get(name, _REQUIRED)
                if not isinstance(spec, Setting):
                    spec = Setting(default=spec)
                fields[name] = spec
        cls.model_fields, cls._kinds = fields, None
        for name, spec in fields.items():  # the class attribute is the default, as in pydantic
            if name not in cls.__dict__:
                continue
            if spec.default is _REQUIRED:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)

    @classmethod
    def _types(cls) -> dict[str, Any]:
        if cls._kinds is None:
            hints: dict[str, Any] = {}
            for klass in reversed(cls.__mro__):
                space = vars(sys.modules[klass.__module__])
                for name, note in vars(klass).get("__annotations__", {}).items():
                    if name in cls.model_fields and cls.model_fields[name].parse is None:
                        hints[name] = _kind(f"{cls.__name__}.{name}", note, space)
            cls._kinds = hints
        return cls._kinds

    @classmethod
    def build(cls, raw: dict[str, Any], loc: Loc, errors: list[tuple[Loc, str]]) -> Any:
        """The table from a document's values, or _BAD with its problems noted."""
        kinds, before = cls._types(), len(errors)
        values: dict[str, Any] = {}
        for name, spec in cls.model_fields.items():
            if name in raw:
                values[name] = _field(spec, kinds.get(name), raw[name], (*loc, name), errors)
            elif spec.factory is not None:
                values[name] = spec.factory()
            elif spec.default is _REQUIRED:
                errors.append(((*loc, name), "Field required"))
            else:
                values[name] = spec.default
        extra = [k for k in raw if k not in cls.model_fields]
        errors.extend(((*loc, k), "Extra inputs are not permitted") for k in extra)
        if len(errors) > before:
            return _BAD
        table = cls._made(values)
        try:
            table._after()
        except ValueError as exc:
            errors.append((loc, str(exc)))
            return _BAD
        return table

    @classmethod
    def _made(cls, values: dict[str, Any]) -> Self:
        table = object.__new__(cls)
        object.__setattr__(table, "__dict__", values)
        return table

    def __init__(self, **values: Any) -> None:
        errors: list[tuple[Loc, str]] = []
        built = type(self).build(values, (), errors)
        if built is _BAD:
            raise Invalid(errors)
        object.__setattr__(self, "__dict__", built.__dict__)

    def _after(self) -> None:
        """The checks of the table as a whole (none by default)."""

    @classmethod
    def model_validate(cls, raw: object) -> Self:
        """The table from a document (a dict of keys); Invalid names each problem."""
        if not isinstance(raw, dict):
            problem = f"Input should be a valid dictionary or instance of {cls.__name__}"
            raise Invalid([((), problem)])
        return cls(**raw)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with some keys replaced, not validated again (as pydantic's)."""
        return self._made({**self.__dict__, **(update or {})})

    def model_dump(self) -> dict[str, Any]:
        def plain(value: object) -> object:
            if isinstance(value, Table) or hasattr(value, "model_dump"):  # pydantic's too
                return value.model_dump()
            return [plain(v) for v in value] if isinstance(value, list) else value

        return {k: plain(v) for k, v in self.__dict__.items()}

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot change")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot change")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *(_hashable(v) for v in self.__dict__.values())))

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({keys})"


def _kind(where: str, note: object, space: dict[str, Any]) -> Any:
    """A key's type from its annotation, which must be text (see kind_of)."""
    if not isinstance(note, str):
        raise TypeError(f"{where}: declare tables under `from __future__ import annotations`")
    return kind_of(note, space)


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value
