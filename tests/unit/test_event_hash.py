"""A ChangeEvent hashes its fields once (it is a dict key ~10 times on its way).

The cached hash must not change what an event is: equal events hash equal,
``replace`` makes a new hash, copies and pickles carry no stale one, and the
fields (``fields``, ``asdict``, ``repr``) are the same as before.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from replicator.events import ChangeEvent, Kind, Position


class CountedPosition:
    """A position that counts how often an event hashing it asks its hash."""

    def __init__(self) -> None:
        self.hashed = 0

    def __hash__(self) -> int:
        self.hashed += 1
        return 7

    def __eq__(self, other: object) -> bool:
        return other is self


def _event(**changes: Any) -> ChangeEvent:
    event = ChangeEvent(
        "src", "bucket", "a/b.bin", Kind.CREATED, 1_700_000_000_123_456_789, 42,
        observed=3, mtime_ns=1_700_000_000_000_000_000, inode=99, listed=True,
    )  # fmt: skip
    return dataclasses.replace(event, **changes) if changes else event


def test_the_fields_are_hashed_once_per_event() -> None:
    position = CountedPosition()
    event = _event(position=position)
    table = {event: 1}
    for _ in range(5):
        assert table[event] == 1
        hash(event)
    assert position.hashed == 1, "every lookup hashed the event's fields again"
    # A new event (replace) hashes its own fields, once.
    other = dataclasses.replace(event, size=43)
    hash(other), hash(other)
    assert position.hashed == 2


def test_equal_events_hash_equal_and_differ_by_any_field() -> None:
    one, two = _event(), _event()
    assert one is not two and one == two and hash(one) == hash(two)
    assert {one: "x"}[two] == "x"
    for name, value in [("key", "a/c.bin"), ("size", 41), ("observed", 4), ("inode", 98)]:
        changed = _event(**{name: value})
        assert changed != one and changed not in {one}


def test_copies_and_pickles_keep_equality_and_carry_no_stale_hash() -> None:
    event = _event(position=Position("topic", 2, 17))
    first = hash(event)
    for again in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert again == event and hash(again) == first
    # The slot is no field: what code reads of an event is unchanged.
    assert [f.name for f in dataclasses.fields(ChangeEvent)][-1] == "listed"
    assert "_hash" not in dataclasses.asdict(event) and "_hash" not in repr(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.key = "other"  # type: ignore[misc]
