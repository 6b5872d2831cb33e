"""Manifest version names: their two patterns and their order, and the
:class:`VersionEntry` that names one stored manifest.

A version-2 name is ``<time>-<sequencer field>-<observed>-<hash>`` and
sorts, as bytes, in version order (event time, then sequencer, then
observation number); a version-1 name is ``<time>-<hash>``. See
docs/store-format.md §6.2 and §10.
"""

from __future__ import annotations

import re

from replicator.records import record

#: Manifest names. v1: ``<time>-<hash>``; v2 adds the sequencer and the
#: observation number, so that byte order of names is version order.
_V1_NAME = re.compile(r"([0-9]{20})-([0-9a-f]{24})")
_V2_NAME = re.compile(r"([0-9]{20})-([0-9]{3})([0-9A-Za-z]*)-([0-9]{20})-([0-9a-f]{24})")
#: Longer sequencers (none seen in practice) do not take part in the order.
_MAX_SEQUENCER = 128
VersionOrder = tuple[int, int, str, int, str]


def sequencer_field(sequencer: str) -> str:
    """The sequencer as a name field that sorts like ``events.sequencer_key``:
    leading zeros dropped, then its length (3 digits), then the text."""
    s = sequencer.lstrip("0")
    if len(s) > _MAX_SEQUENCER or not (s.isascii() and s.isalnum()):
        s = ""  # not orderable by AWS's rule; the body still records it
    return f"{len(s):03d}{s}"


def version_order(name: str) -> VersionOrder | None:
    """Sort key of a version name (v1 or v2); None for a name that is not one.

    v2 names sort by their bytes already; this also places v1 names (no
    sequencer, observation 0) among them in a store holding both."""
    if m := _V2_NAME.fullmatch(name):
        if len(m[3]) != int(m[2]):
            return None
        return (int(m[1]), int(m[2]), m[3], int(m[4]), m[5])
    if m := _V1_NAME.fullmatch(name):
        return (int(m[1]), 0, "", 0, m[2])
    return None


@record(frozen=True, slots=True)
class VersionEntry:
    """One stored manifest, before its body is read.

    ``store_key`` is the manifest's object name in formats 1 and 2; in
    format 3 it is ``<segment>#<offset>``, for messages only, and ``where``
    says where the bytes are: (segment store name, byte offset, length)."""

    store_key: str
    key: str
    version_name: str
    bucket: str = ""
    where: tuple[str, int, int] | None = None

    @property
    def event_time_ns(self) -> int:
        # Names start with the zero-padded event time (format.version_name),
        # so choosing a version never needs the manifest body.
        return int(self.version_name.split("-", 1)[0])
