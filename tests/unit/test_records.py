"""``replicator.records.record`` behaves as ``dataclasses.dataclass`` does for
what replicator uses: each case runs the same class body through both and
compares what code can observe. Timings are printed, never asserted."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from replicator.records import record


def _define(deco: Callable[..., Any], **kw: Any) -> Any:
    @deco(**kw)
    class Item:
        name: str
        size: int
        tags: list[str] = field(default_factory=list, compare=False)
        note: str = field(default="", repr=False)
        seen: int = field(default=0, init=False)
        created: list[int] = field(default_factory=list, init=False, compare=False)

    return Item


KINDS = [{"frozen": True, "slots": True}, {"frozen": True}, {"slots": True}, {}, {"eq": False}]


@pytest.mark.parametrize("kw", KINDS, ids=[str(k) for k in KINDS])
def test_same_behaviour_as_dataclass(kw: dict[str, bool]) -> None:
    for deco in (dataclass, record):
        cls = _define(deco, **kw)
        a, b = cls("a", 1, ["x"], "n"), cls("a", 1, note="n")
        assert (a.name, a.size, a.tags, a.note, a.seen, a.created) == ("a", 1, ["x"], "n", 0, [])
        assert repr(a) == "_define.<locals>.Item(name='a', size=1, tags=['x'], seen=0, created=[])"
        assert (a == b) is kw.get("eq", True)
        assert a != cls("a", 2, note="n")
        assert a.__eq__(("a", 1)) is NotImplemented
        assert [f.name for f in dataclasses.fields(a)] == [
            *("name", "size", "tags", "note", "seen", "created")
        ]
        assert dataclasses.replace(a, size=5).size == 5
        assert dataclasses.asdict(b)["tags"] == []
        assert cls.__match_args__ == ("name", "size", "tags", "note")
        assert b.tags is not cls("a", 1).tags  # a new list each time
        if kw.get("frozen"):
            assert hash(a) == hash(b)
            with pytest.raises(dataclasses.FrozenInstanceError):
                a.size = 2
            with pytest.raises(dataclasses.FrozenInstanceError):
                del a.size
        elif kw.get("eq", True):
            with pytest.raises(TypeError):
                hash(a)
        else:
            assert hash(a) != hash(b)  # identity
        if kw.get("slots"):
            assert not hasattr(a, "__dict__")
        assert copy.copy(a) == a if kw.get("eq", True) else True
        assert copy.deepcopy(a).tags == ["x"]


_PICKLED: Any = record(frozen=True, slots=True)(
    type("Pickled", (), {"__annotations__": {"x": "int"}})
)


def test_frozen_slots_pickle() -> None:
    globals()["Pickled"] = _PICKLED  # pickle finds the class by its module name
    item = _PICKLED(3)
    assert pickle.loads(pickle.dumps(item)) == item


def test_post_init_and_keyword_only() -> None:
    @record(frozen=True)
    class Checked:
        low: int
        high: int = field(default=9, kw_only=True)

        def __post_init__(self) -> None:
            if self.low > self.high:
                raise ValueError("low above high")

    assert Checked(1, high=2).high == 2
    with pytest.raises(ValueError, match="low above high"):
        Checked(5, high=2)
    with pytest.raises(TypeError):
        Checked(1, 2)  # type: ignore[call-arg]


def test_refuses_what_it_would_silently_replace() -> None:
    with pytest.raises(TypeError, match="defines __repr__"):

        @record
        class Shown:
            x: int

            def __repr__(self) -> str:
                return "x"


def test_cheaper_to_define_than_dataclass() -> None:
    """Prints both costs; the figure is in docs/performance.md."""
    for deco in (dataclass, record):
        start = time.perf_counter()
        for _ in range(50):
            _define(deco, frozen=True, slots=True)
        print(f"{getattr(deco, '__name__', deco)}: {(time.perf_counter() - start) * 20:.3f} ms")


def test_init_compiled_at_first_instance() -> None:
    """A record never built costs no compile; once built, its __init__ takes
    the same parameters as the dataclass's."""
    cls = _define(record, frozen=True, slots=True)
    stand_in = cls.__init__
    first, second = cls("a", 1), cls("a", 1, note="n")
    assert cls.__init__ is not stand_in
    assert (first.note, second.note) == ("", "n")
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(_define(dataclass, frozen=True, slots=True)).parameters
    assert list(ours) == list(theirs) == ["name", "size", "tags", "note"]
    assert [p.kind for p in ours.values()] == [p.kind for p in theirs.values()]
