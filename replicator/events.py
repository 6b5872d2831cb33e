"""ChangeEvent: the normalised, immutable description of one change at a source.

Vocabulary: a *source* (``replicator.sources``) turns what a storage system
announces (an S3 notification read from Kafka, an inotify event, a line of a
listing) into ChangeEvents. An event names one object version: created
(written, overwritten, renamed into place) or removed. Its ``event_time_ns``
is the storage system's time, never the daemon's: the RPO is measured from
it. ``position`` says where the event came from (a Kafka record, or the
watcher), so a source can acknowledge exactly that event once it is durable.

Versions of one key are ordered by :meth:`ChangeEvent.order_key`: event time,
then the S3 sequencer (compared as AWS documents it: left-padded with zeros,
which for hex strings is numeric order), then the observation sequence a
source assigns. Parsers of the AWS / MinIO / Ceph notification formats live
in ``replicator.sources.s3events``.
"""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum
from operator import attrgetter

from replicator.origins import ObjectVersion
from replicator.records import record


class Kind(StrEnum):
    CREATED = "created"
    REMOVED = "removed"


@record(frozen=True, slots=True)
class Position:
    """Where an event came from: a Kafka record, or a watcher's sequence number."""

    topic: str = ""  # "" for the directory watcher and listings
    partition: int = -1
    offset: int = -1  # the Kafka offset, or the watcher's observation number


def sequencer_key(sequencer: str) -> tuple[int, str]:
    """Sort key for S3 sequencers of possibly different lengths.

    AWS: left-pad the shorter with zeros, then compare as strings. Stripping
    leading zeros and comparing (length, text) is the same order, and also
    works for sequencers that are not hex."""
    s = sequencer.lstrip("0")
    return (len(s), s)


class _HashOnce:
    """The slot a ChangeEvent keeps its hash in (not a field: ``fields``,
    ``replace``, equality, copies and pickles do not see it)."""

    __slots__ = ("_hash",)
    _hash: int


@record(frozen=True, slots=True)
class ChangeEvent(_HashOnce):
    source: str  # the source id recorded in manifests (SourceIdentity.source)
    bucket: str
    key: str  # decoded: S3 '+' and %XX already undone
    kind: Kind
    event_time_ns: int  # storage system's time (S3 eventTime, fs ctime)
    size: int = 0
    version_id: str = ""
    etag: str = ""
    sequencer: str = ""
    #: Observation order within a source, for ties the storage system leaves.
    observed: int = 0
    position: Position = Position()
    #: A file's mtime and inode (directory source): metadata kept in the
    #: manifest, so the version's identity is the one a listing gives.
    mtime_ns: int | None = None
    inode: int | None = None
    #: A listing's event (``sources/listing.py``): ``observed`` is then the
    #: observation number its manifest takes (``reconcile.identity_of``), so
    #: a listed version gets the one manifest name a backfill gives it. Other
    #: sources' ``observed`` is their own token, never written to a manifest.
    listed: bool = False

    def __hash__(self) -> int:
        # An event is a dict key at every step of its way (its route, its
        # version, the lane's and the tally's tables: ~10 lookups each), and
        # hashing 15 fields (the Kind and Position by Python calls) cost
        # ~2 us each time: ~6 % of a first copy's event loop. It is frozen,
        # so the hash is computed once; equal events still hash equal.
        try:
            return self._hash
        except AttributeError:
            h = hash(_COMPARED(self))
            object.__setattr__(self, "_hash", h)
            return h

    @property
    def removed(self) -> bool:
        return self.kind is Kind.REMOVED

    def order_key(self) -> tuple[int, tuple[int, str], int]:
        """Total order of the versions of one key (invariant 6)."""
        return (self.event_time_ns, sequencer_key(self.sequencer), self.observed)

    def object_version(self) -> ObjectVersion:
        """What an origin opens to read this version's bytes."""
        return ObjectVersion(self.key, self.size, self.event_time_ns, self.version_id, self.etag)


#: The compared fields of a ChangeEvent, as its equality reads them.
_COMPARED = attrgetter(*(f.name for f in fields(ChangeEvent) if f.compare))
