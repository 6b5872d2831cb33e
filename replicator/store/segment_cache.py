"""The header table of a format 3 peer: which manifest sits in which segment.

One row per segment entry: its *place* (``<escaped bucket>/<escaped
key>/<version name>``, the manifest's name in a version-2 store below
``manifests/``, so place order is the version-2 listing order), the
segment, the entry's offset, length and BLAKE3. A (bucket, key, version)
held by two segments (a replay that batched differently) has two rows;
readers take one (``GROUP BY place``), verify compares their digests.

The table is a hint like the pack index cache: ``store/segment_store.py``
reconciles it with a listing of ``segments/`` (mark and sweep by
generation, reading only the headers of segments it does not know yet).
It is kept in a file next to the peer's index cache, or, without a cache
directory, in a private temporary database SQLite deletes on close (on
disk, so memory stays bounded whatever the peer's size).

The methods block; the store calls them through ``asyncio.to_thread``,
one lock serialising them on the one connection.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Container, Mapping, Sequence
from pathlib import Path
from typing import Any

from replicator.store.heads import Head
from replicator.store.names import encode_segment
from replicator.store.segments import SegmentHeader

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seg_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seg_files (name TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                      gen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seg_entries (place TEXT NOT NULL, segment TEXT NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, digest BLOB NOT NULL,
    bucket BLOB NOT NULL, key BLOB NOT NULL,
    removed INTEGER, source BLOB, version_id BLOB, etag BLOB, size INTEGER,
    mtime_ns INTEGER, inode INTEGER, observed INTEGER,
    PRIMARY KEY (place, segment)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seg_entries_segment ON seg_entries (segment);
-- (With the primary key's columns after them: a key's places in version order.)
CREATE INDEX IF NOT EXISTS seg_entries_key ON seg_entries (bucket, key);
"""
#: The table's layout; a file of another (older) layout is emptied and
#: rebuilt by the next reconcile, never read as if it were this one.
SCHEMA_VERSION = 3
#: Above every character of a place (escaped names are ASCII up to '~').
PLACE_END = "\x7f"
#: sqlite's default limit on host parameters is 999 in old builds.
_BATCH = 500
#: Keys per statement of ``heads`` (four parameters each).
_SPANS = 240
#: One row of a scan: place, segment, offset, length, BLAKE3, bucket, key.
Row = tuple[str, str, int, int, bytes, str, str]
_HEAD_COLUMNS = "removed, source, version_id, etag, size, mtime_ns, inode, observed"
#: Entries of a key range, in key order, after (key, version) and up to a key.
_BETWEEN = (
    f"SELECT key, place, {_HEAD_COLUMNS} FROM seg_entries "  # noqa: S608
    "WHERE bucket = ? AND (key, place) > (?, ?) AND key <= ? ORDER BY key, place LIMIT ?"
)
#: Rows per statement of ``heads_between``.
_SCAN = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: One entry with the head of its manifest (store/heads.py), kept beside
#: its row so that an unchanged re-run reads no segment and parses no JSON;
#: None until the writer records it or a reader has parsed it once (``fill``).
HeadRow = tuple[Row, Head | None]
#: A key's newest version: its name, whether it is a removal (None: not
#: known yet), where it is (segment, offset, length).
Latest = tuple[str, bool | None, tuple[str, int, int]]


_DROP = """
DROP TABLE IF EXISTS seg_entries; DROP TABLE IF EXISTS seg_files; DROP TABLE IF EXISTS seg_meta;
"""


def _connect(path: Path | None, store_config: bytes) -> sqlite3.Connection:
    # "" is a private temporary database on disk, removed on close.
    db = sqlite3.connect(str(path) if path else "", check_same_thread=False)
    try:
        db.isolation_level = None
        if path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost tail only costs a re-sync
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.executescript(_DROP)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM seg_meta WHERE key='config'").fetchone()
        if row is not None and bytes(row[0]) != store_config:
            # The peer was recreated with another configuration: nothing here holds.
            db.executescript("DELETE FROM seg_entries; DELETE FROM seg_files;")
        if row is None or bytes(row[0]) != store_config:  # no write (WAL, syncs) when unchanged
            db.execute("INSERT OR REPLACE INTO seg_meta VALUES ('config', ?)", (store_config,))
    except BaseException:
        db.close()
        raise
    return db


def place_of(bucket: str, key: str, version_name: str) -> str:
    return f"{encode_segment(bucket)}/{encode_segment(key)}/{version_name}"


def _text(value: bytes) -> str:
    # Keys of non-UTF-8 file names hold lone surrogates, which sqlite's
    # TEXT cannot: names are stored as surrogateescape bytes.
    return value.decode("utf-8", "surrogateescape")


def _blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class HeaderTable:
    """The entries of a peer's segments, in place order."""

    def __init__(self, path: Path | None, store_config: bytes) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = _connect(path, store_config)
        except sqlite3.DatabaseError as exc:
            if path is None or isinstance(exc, sqlite3.OperationalError):
                raise  # (a directory it cannot write: the caller falls back)
            # A damaged cache is only a lost hint: start afresh, a reconcile refills it.
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            self._db = _connect(path, store_config)
        self._gen = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ sync

    def begin_sync(self) -> None:
        """Start a generation: segments not stamped in it are swept at its end."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(gen), 0) FROM seg_files").fetchone()
            self._gen = int(row[0]) + 1

    def stamp(self, names: Sequence[str]) -> list[str]:
        """Stamp the known segments among ``names``; the unknown ones."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            known: set[str] = set()
            for i in range(0, len(names), _BATCH):
                part = list(names[i : i + _BATCH])
                marks = ",".join("?" * len(part))
                self._db.execute(
                    f"UPDATE seg_files SET gen = ? WHERE name IN ({marks})",  # noqa: S608
                    [self._gen, *part],
                )
                sql = f"SELECT name FROM seg_files WHERE name IN ({marks})"  # noqa: S608
                known.update(r[0] for r in self._db.execute(sql, part))
        return [n for n in names if n not in known]

    def record(
        self,
        headers: Sequence[tuple[str, SegmentHeader]],
        heads: Mapping[str, Head] | None = None,
    ) -> None:
        """Add segments (name, header) in the current generation, with the
        heads of their entries by place where the caller knows them (the
        writer, from the manifests it just wrote)."""
        heads = heads or {}
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for name, h in headers:
                self._db.execute(
                    "INSERT OR REPLACE INTO seg_files VALUES (?, ?, ?)", (name, h.size, self._gen)
                )
                bucket, ebucket = _blob(h.bucket), encode_segment(h.bucket)
                rows = []
                for e in h.entries:
                    place = f"{ebucket}/{encode_segment(e.key)}/{e.version_name}"
                    row = (place, name, e.offset, e.length, e.digest, bucket, _blob(e.key))
                    rows.append(row + _head_columns(heads.get(place)))
                self._db.executemany(
                    "INSERT OR REPLACE INTO seg_entries VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

    def sweep(self) -> int:
        """Forget the segments the current generation did not stamp."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            stale = [
                r[0]
                for r in self._db.execute("SELECT name FROM seg_files WHERE gen < ?", (self._gen,))
            ]
            for name in stale:
                self.forget_locked(name)
        return len(stale)

    def forget(self, name: str) -> None:
        """The segment is gone from the peer (read as missing)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self.forget_locked(name)

    def forget_locked(self, name: str) -> None:
        self._db.execute("DELETE FROM seg_entries WHERE segment = ?", (name,))
        self._db.execute("DELETE FROM seg_files WHERE name = ?", (name,))

    # ------------------------------------------------------------ queries

    def segments(self, prefix: str) -> list[tuple[str, int]]:
        """(name, size) of the known segments whose name starts with ``prefix``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, size FROM seg_files WHERE name >= ? AND name < ? ORDER BY name",
                (prefix, prefix + PLACE_END),
            ).fetchall()
        return [(str(n), int(z)) for n, z in rows]

    def present(self, places: Sequence[str]) -> set[str]:
        """The places among ``places`` some segment holds."""
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(places), _BATCH):
                part = list(places[i : i + _BATCH])
                marks = ",".join("?" * len(part))
                sql = f"SELECT DISTINCT place FROM seg_entries WHERE place IN ({marks})"  # noqa: S608
                found.update(r[0] for r in self._db.execute(sql, part))
        return found

    def page(self, low: str, high: str, limit: int = -1) -> list[Row]:
        """Up to ``limit`` (-1: all) entries with ``low`` <= place < ``high``,
        one per place (of several copies, the one in the least segment name),
        in place order. The next page starts at ``after(last place)``."""
        with self._lock:
            return self._page(low, high, limit)

    def _page(self, low: str, high: str, limit: int) -> list[Row]:
        # With MIN(), sqlite takes the bare columns from the row holding the minimum.
        rows = self._db.execute(
            "SELECT place, MIN(segment), offset, length, digest, bucket, key "
            "FROM seg_entries WHERE place >= ? AND place < ? "
            "GROUP BY place ORDER BY place LIMIT ?",
            (low, high, limit),
        ).fetchall()
        return [(p, s, o, n, bytes(d), _text(b), _text(k)) for p, s, o, n, d, b, k in rows]

    def ranges(self, spans: Sequence[tuple[str, str]]) -> list[list[Row]]:
        """``page`` of each (low, high), whole: one read transaction for all
        (each statement on its own would take and drop the file locks)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            return [self._page(low, high, -1) for low, high in spans]

    def heads_between(
        self, bucket: str, wanted: Sequence[tuple[str, str]]
    ) -> list[list[tuple[str, Head | None]]]:
        """Per (key, version-name prefix) of ``bucket``: (version name, head)
        of each of its entries (a version two segments hold comes twice).

        One scan of the key index from the least wanted key to the greatest,
        not a lookup per key: a listing's page is a run of neighbouring keys,
        and a lookup costs more than the rows it returns (measured: 5,000
        keys in 12-19 ms scanned, 60 ms looked up one by one)."""
        out: list[list[tuple[str, Head | None]]] = [[] for _ in wanted]
        index: dict[bytes, list[int]] = defaultdict(list)
        for i, (key, _) in enumerate(wanted):
            index[_blob(key)].append(i)
        if not index:
            return out
        b, high = _blob(bucket), max(index)
        last: tuple[bytes, str] = (min(index), "")
        with self._lock, self._db:
            self._db.execute("BEGIN")
            while True:
                rows = self._db.execute(_BETWEEN, (b, *last, high, _SCAN)).fetchall()
                for k, place, *head in rows:
                    version = place.rpartition("/")[2]
                    for i in index.get(k, ()):
                        key, prefix = wanted[i]
                        if version.startswith(prefix):
                            out[i].append((version, _head_of(bucket, key, version, head)))
                if len(rows) < _SCAN:
                    return out
                last = (rows[-1][0], rows[-1][1])

    def heads(self, bucket: str, wanted: Sequence[tuple[str, str]]) -> list[list[HeadRow]]:
        """Per (key, version-name prefix) of ``bucket``: its entries (one per
        place, as ``page``) with their heads, in place order. One read
        transaction, one statement per ``_SPANS`` keys (a statement per key
        costs more than its answer when a re-run checks thousands)."""
        out: list[list[HeadRow]] = [[] for _ in wanted]
        b = _blob(bucket)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for start in range(0, len(wanted), _SPANS):
                part = wanted[start : start + _SPANS]
                values = ",".join(["(?, ?, ?, ?)"] * len(part))
                params: list[object] = []
                for i, (key, prefix) in enumerate(part, start):
                    low = place_of(bucket, key, prefix)
                    params += (i, _blob(key), low, low + PLACE_END)
                params.append(b)  # ?N: after the VALUES' anonymous parameters
                # With MIN(), sqlite takes the bare columns from the row holding the minimum.
                sql = (
                    f"WITH w(i, k, low, high) AS (VALUES {values}) "  # noqa: S608
                    "SELECT w.i, e.place, MIN(e.segment), e.offset, e.length, e.digest, "
                    f"{_HEAD_COLUMNS} FROM w JOIN seg_entries e ON e.bucket = ?{len(params)} "
                    "AND e.key = w.k AND e.place >= w.low AND e.place < w.high "
                    "GROUP BY w.i, e.place ORDER BY w.i, e.place"
                )
                for i, place, seg, o, n, d, *head in self._db.execute(sql, params):
                    row: Row = (place, seg, o, n, d, bucket, wanted[i][0])
                    out[i].append((row, _head_of_columns(row, head)))
        return out

    def fill(self, items: Sequence[tuple[str, str, Head]]) -> None:
        """Record the heads (place, segment, head) readers parsed."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE seg_entries SET removed = ?, source = ?, version_id = ?, etag = ?, "
                "size = ?, mtime_ns = ?, inode = ?, observed = ? "
                "WHERE place = ? AND segment = ?",
                [(*_head_columns(head), place, segment) for place, segment, head in items],
            )

    def latest(
        self, bucket: str, low_key: str, inclusive: bool, limit: int, skip: Container[str] = ()
    ) -> list[tuple[str, Latest | None]]:
        """Up to ``limit`` keys of ``bucket`` from ``low_key`` on, in key order
        (as the UTF-8 bytes of keys sort; the next page starts after the last
        key), each with its newest entry: its greatest version name, where it
        is, and whether it is a removal (None: its head is not known). Keys
        in ``skip`` come with None: only the key index is read for them
        (a re-run's listed keys: nearly every key)."""
        op = ">=" if inclusive else ">"
        b = _blob(bucket)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            keys = [
                _text(k)
                for (k,) in self._db.execute(
                    f"SELECT DISTINCT key FROM seg_entries WHERE bucket = ? AND key {op} ? "  # noqa: S608
                    "ORDER BY key LIMIT ?",
                    (b, _blob(low_key), limit),
                )
            ]
            wanted = [_blob(k) for k in keys if k not in skip]
            newest: dict[str, Latest] = {}
            for i in range(0, len(wanted), _BATCH):
                part = wanted[i : i + _BATCH]
                marks = ",".join("?" * len(part))
                for k, v, r, seg, o, n in self._db.execute(
                    "SELECT key, MAX(place), removed, segment, offset, length "  # noqa: S608
                    f"FROM seg_entries WHERE bucket = ? AND key IN ({marks}) GROUP BY key",
                    (b, *part),
                ):
                    name = v.rpartition("/")[2]
                    newest[_text(k)] = (name, None if r is None else bool(r), (seg, o, n))
        return [(k, newest.get(k)) for k in keys]

    def digest(self, segment: str, offset: int) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT digest FROM seg_entries WHERE segment = ? AND offset = ?",
                (segment, offset),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def conflicts(self, limit: int = 1000) -> list[tuple[str, str, str, list[str]]]:
        """(bucket, key, version name, segments) of the entries held in
        several segments with different bytes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT place, bucket, key, group_concat(segment, ' ') FROM seg_entries "
                "GROUP BY place HAVING COUNT(DISTINCT digest) > 1 ORDER BY place LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            (_text(b), _text(k), p.rpartition("/")[2], sorted(str(s).split(" ")))
            for p, b, k, s in rows
        ]


def after(place: str) -> str:
    """The least string above ``place`` (no place holds NUL)."""
    return place + "\x00"


def _head_columns(head: Head | None) -> tuple[object, ...]:
    if head is None:
        return (None,) * 8
    removed, source, _, _, version_id, etag, size, _, mtime, inode, observed = head
    # A file's ETag is its BLAKE3 in hex: kept as its 32 bytes (a BLOB; any
    # other ETag is TEXT), a quarter of every row of a filesystem source.
    tag: object = bytes.fromhex(etag) if _HEX64.fullmatch(etag) else etag
    if not etag.isascii():
        return (None,) * 8  # (no S3 ETag is; its manifest is read when needed)
    return (int(removed), _blob(source), _blob(version_id), tag, size, mtime, inode, observed)


def _head_of_columns(row: Row, head: list[Any]) -> Head | None:
    return _head_of(row[5], row[6], row[0].rpartition("/")[2], head)


def _head_of(bucket: str, key: str, version: str, head: list[Any]) -> Head | None:
    removed, source, version_id, etag, size, mtime, inode, observed = head
    if removed is None:
        return None
    # Bucket, key and event time are the entry's own (a head is recorded
    # only when its manifest agrees with them).
    return (
        bool(removed),
        _text(source),
        bucket,
        key,
        _text(version_id),
        etag.hex() if isinstance(etag, bytes) else etag,
        size,
        int(version[:20]),
        mtime,
        inode,
        observed,
    )
