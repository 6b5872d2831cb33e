"""The offset watermark: never past an undone event, whatever the done order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.sources.watermark import Gap, PartitionMark, Watermarks, find_gap

TP = ("events", 0)


def test_out_of_order_done_holds_the_watermark() -> None:
    marks = Watermarks()
    marks.assign(TP, 10)
    for offset, token in [(10, 1), (11, 2), (12, 3)]:
        marks.add(TP, offset, [token])
    assert marks.done(TP, 12, 3) and marks.done(TP, 11, 2)
    assert marks.commits() == {}  # 10 is not done: nothing moves
    assert marks.done(TP, 10, 1)
    assert marks.commits() == {TP: 13}


def test_record_with_several_events_needs_all() -> None:
    marks = Watermarks()
    marks.assign(TP, 0)
    marks.add(TP, 0, [1, 2, 3])
    marks.done(TP, 0, 1)
    marks.done(TP, 0, 3)
    assert marks.commits() == {} and marks.in_flight == 1
    marks.done(TP, 0, 2)
    assert marks.commits() == {TP: 1} and marks.in_flight == 0


def test_record_without_events_is_done_at_once_and_gaps_in_offsets() -> None:
    marks = Watermarks()
    marks.assign(TP, 5)
    marks.add(TP, 5, [])  # a test event
    marks.add(TP, 9, [])  # offsets 6-8: compacted away or transaction markers
    assert marks.commits() == {TP: 10}


def test_committed_offsets_are_not_committed_again() -> None:
    marks = Watermarks()
    marks.assign(TP, 0)
    marks.add(TP, 0, [1])
    marks.done(TP, 0, 1)
    marks.committed(marks.commits())
    assert marks.commits() == {}


def test_revoke_drops_in_flight_and_stale_done_is_ignored() -> None:
    marks = Watermarks()
    marks.assign(TP, 0)
    marks.add(TP, 0, [1])
    marks.add(TP, 1, [2])
    assert marks.revoke(TP) == 2 and marks.in_flight == 0
    marks.assign(TP, 0)  # the partition comes back: starts afresh
    marks.add(TP, 0, [3])
    assert not marks.done(TP, 0, 1)  # a token of the old assignment
    assert marks.commits() == {} and marks.in_flight == 1


def test_repeated_done_counts_once() -> None:
    marks = Watermarks()
    marks.assign(TP, 0)
    marks.add(TP, 0, [1, 2])
    assert marks.done(TP, 0, 1)
    assert not marks.done(TP, 0, 1)
    assert marks.in_flight == 1


def test_offsets_must_rise() -> None:
    mark = PartitionMark(5)
    with pytest.raises(ValueError, match="offset 4"):
        mark.add(4, [1])
    with pytest.raises(KeyError):
        Watermarks().add(TP, 0, [1])


@given(
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
    stop=st.floats(0, 1),
)
def test_watermark_is_first_undone_offset(sizes: list[int], order: object, stop: float) -> None:
    """Random records (0-3 events each), done in random order, partly: the
    watermark is always the lowest offset with an undone event (else the end)."""
    mark = PartitionMark(100)
    token = 0
    events = []
    for i, n in enumerate(sizes):
        tokens = list(range(token, token + n))
        token += n
        mark.add(100 + i * 2, tokens)  # every other offset: offsets need not be contiguous
        events += [(100 + i * 2, t) for t in tokens]
    order.shuffle(events)  # type: ignore[attr-defined]
    end = 100 + len(sizes) * 2 - 1  # one past the last record added
    undone = set(events)
    for offset, t in events[: int(len(events) * stop)]:
        assert mark.done(offset, t)
        undone.discard((offset, t))
        assert mark.watermark() == min((o for o, _ in undone), default=end)
    assert mark.watermark() == min((o for o, _ in undone), default=end)


def test_gap_rules() -> None:
    assert find_gap(TP, 3, 8, 3) == Gap("events", 0, 3, 8)  # retention passed the group
    assert find_gap(TP, 8, 8, 8) is None
    assert find_gap(TP, None, 0, 0) is None  # a new group on a whole log loses nothing
    assert find_gap(TP, None, 5, 5) == Gap("events", 0, None, 5)  # expired offsets, old log
    assert find_gap(TP, None, 0, 40) == Gap("events", 0, None, 0)  # started at the end


def test_backlog_and_lag_from_log_ends() -> None:
    marks = Watermarks()
    marks.assign(TP, 10)
    marks.add(TP, 10, [1])
    marks.add(TP, 11, [2])
    marks.done(TP, 11, 2)
    assert marks.not_handed_out({TP: 20}) == 8  # 12..19
    assert marks.lag({TP: 20}) == {TP: 10}  # 10 is not done: 10..19
