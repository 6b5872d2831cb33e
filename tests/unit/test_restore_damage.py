"""Which selected keys a restore names for its damaged segments: a version in
a segment whose header still reads is lost only when no readable copy of it,
nor a newer version, was chosen (replays leave duplicates in other
segments); a segment whose header is unreadable is named once."""

from __future__ import annotations

from dataclasses import dataclass

from replicator.restore_damage import Unread


@dataclass(frozen=True)
class Seg:
    """The shape of segment_store.DamagedSegment."""

    segment: str
    why: str
    bucket: str
    held: tuple[tuple[str, str], ...] | None = None


def name(t: int) -> str:
    return f"{t:020d}-000-{0:020d}-{'ab' * 12}"


def test_a_version_held_elsewhere_or_superseded_is_no_problem() -> None:
    held = (("k/dup", name(5)), ("k/old", name(3)), ("k/lost", name(4)), ("x", name(1)))
    seg = Seg("segments/b/aa/aa", "its bytes do not hash to its name", "b", held)
    unread = Unread("k/", exact=False, at_ns=None)
    unread.add([seg])
    assert sorted(unread.known) == ["k/dup", "k/lost", "k/old"], "only keys under the prefix"
    unread.saw("k/dup", name(5))  # a readable copy of the very version (a replay's)
    unread.saw("k/old", name(9))  # a newer version was chosen
    unread.saw("other", name(1))
    (problem,) = unread.problems(restored_nothing=False)
    assert (problem.key, problem.version) == ("k/lost", name(4))
    assert problem.message.endswith(": not restored") and seg.segment in problem.message


def test_at_a_time_before_the_damaged_version_it_is_not_wanted() -> None:
    seg = Seg("segments/b/aa/aa", "why", "b", (("k", name(50)),))
    before = Unread("k", exact=True, at_ns=49)
    before.add([seg])
    before.saw("k", name(10))
    assert before.problems(restored_nothing=False) == []
    after = Unread("k", exact=True, at_ns=50)
    after.add([seg])
    after.saw("k", name(10))
    (problem,) = after.problems(restored_nothing=False)
    assert problem.message.endswith(f"restored the older version {name(10)} instead")


def test_an_unreadable_header_is_named_once_per_selection() -> None:
    seg = Seg("segments/b/cc/cc", "no segment preamble", "b")
    key = Unread("k", exact=True, at_ns=None)
    key.add([seg])
    (missing,) = key.problems(restored_nothing=True)
    assert missing.key == "k" and "no readable manifest of this key" in missing.message
    (newer,) = key.problems(restored_nothing=False)
    assert "a newer version of this key than the one restored may be in it" in newer.message
    prefix = Unread("", exact=False, at_ns=None)
    prefix.add([seg, seg])
    assert [p.key for p in prefix.problems(restored_nothing=False)] == ["", ""]
