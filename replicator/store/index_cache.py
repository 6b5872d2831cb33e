"""The local index cache of one peer: which chunks the peer holds, and where.

A stdlib sqlite3 file per peer maps chunk digest -> (pack, offset, length,
stored length, compression). It is only a *hint*: the peer's ``index/``
objects are the truth, ``sync`` reconciles the two, and the pack writer
HEADs a pack before it first relies on it in a run (see ``packs.py``).

sqlite calls block, so they run on one dedicated thread per cache, in
batches (a thread hop costs far more than a lookup).

A format 3 peer's segment header table lives beside it, in its own file
(``segment_cache_path``; store/segment_cache.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from replicator.errors import ConfigError, IntegrityError, NotFoundError
from replicator.records import record
from replicator.store.backend import Backend
from replicator.store.format import INDEX, PackIndex, index_key

log = logging.getLogger(__name__)

T = TypeVar("T")

#: sqlite's default limit on host parameters is 999 in old builds.
_BATCH = 500
#: Index objects fetched at once while syncing.
_SYNC_FETCHES = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS packs (pack BLOB PRIMARY KEY, size INTEGER NOT NULL,
                                  gen INTEGER NOT NULL DEFAULT 0);  -- gen: unused
CREATE TABLE IF NOT EXISTS chunks (digest BLOB PRIMARY KEY, pack BLOB NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, stored_length INTEGER NOT NULL,
    compression TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_pack ON chunks (pack);
"""


@record(frozen=True, slots=True)
class Location:
    """Where a chunk sits at a peer."""

    pack: bytes
    offset: int
    length: int
    stored_length: int
    compression: str = "none"


@record(frozen=True, slots=True)
class SyncStats:
    loaded: int  # index objects read from the peer
    dropped: int  # packs forgotten because their index vanished
    packs: int  # packs known after the sync
    #: Objects under index/ that were skipped (stray or unreadable).
    skipped: int = 0
    #: The first MAX_SKIP_REPORTS of them, each "destination …: skipped <key>: <why>".
    skip_reports: tuple[str, ...] = ()


#: Skipped index objects reported one by one (the rest are only counted).
MAX_SKIP_REPORTS = 20


class _Skips:
    """Skipped objects of one sync: counted, the first few reported."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.count = 0
        self.reports: list[str] = []

    def add(self, key: str, why: str) -> None:
        self.count += 1
        if len(self.reports) < MAX_SKIP_REPORTS:
            message = f"destination {self.backend.name!r}: skipped {key}: {why}"
            log.warning("%s", message)
            self.reports.append(message)


#: The only names index/ holds: index/<hh>/<64 hex>, hh its first two.
_INDEX_NAME = re.compile(r"index/([0-9a-f]{2})/(\1[0-9a-f]{62})")


class CacheDirError(ConfigError):
    """The local index cache cannot be created or opened (a setting to fix)."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "replicator" / "index"


def cache_path(cache_dir: Path | None, peer_identity: str) -> Path:
    """One file per peer, named by a hash of where the peer lives."""
    h = hashlib.sha256(peer_identity.encode()).hexdigest()[:32]
    return (cache_dir or default_cache_dir()) / f"{h}.sqlite"


def segment_cache_path(cache_dir: Path | None, peer_identity: str) -> Path:
    """The segment header table of a format 3 peer, next to its index cache
    (store/segment_cache.py; its own file, so neither waits on the other's writes)."""
    return cache_path(cache_dir, peer_identity).with_suffix(".segments.sqlite")


class IndexCache:
    """Digest -> location hints for one peer, persisted in sqlite."""

    def __init__(self, path: Path, store_config: bytes) -> None:
        self.path = path
        self._config = store_config
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-cache")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
        except sqlite3.OperationalError as exc:  # e.g. "unable to open database file"
            raise self._unusable(str(exc)) from exc
        except (FileExistsError, NotADirectoryError) as exc:
            raise self._unusable(f"{exc.filename} is not a directory") from exc
        except OSError as exc:
            raise self._unusable(exc.strerror or type(exc).__name__) from exc
        except sqlite3.DatabaseError:
            # A damaged cache is only a lost hint: start afresh, sync refills it.
            for suffix in ("", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
            self._db = self._connect()

    def _unusable(self, why: str) -> CacheDirError:
        return CacheDirError(
            f"index cache {self.path}: {why}; set store.cache_dir to a writable directory "
            f"(default {default_cache_dir()})"
        )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a lost tail only costs a re-sync
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='config'").fetchone()
        if row is not None and bytes(row[0]) != self._config:
            # The peer was recreated with another configuration: nothing here holds.
            db.executescript("DELETE FROM chunks; DELETE FROM packs;")
        if row is None or bytes(row[0]) != self._config:
            # Written only when it changes: a write on every open started a
            # new WAL (two syncs) and made close checkpoint it (two more).
            db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (self._config,))
        return db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("IndexCache used before open()")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------ queries

    async def lookup(self, digests: Sequence[bytes]) -> dict[bytes, Location]:
        """Known locations of ``digests`` (absent ones are left out)."""
        if not digests:
            return {}
        return await self._run(lambda: self._lookup_sync(digests))

    def _lookup_sync(self, digests: Sequence[bytes]) -> dict[bytes, Location]:
        out: dict[bytes, Location] = {}
        for i in range(0, len(digests), _BATCH):
            part = list(dict.fromkeys(digests[i : i + _BATCH]))
            marks = ",".join("?" * len(part))
            # Only '?' marks are interpolated; the values travel as parameters.
            sql = f"SELECT digest, pack, offset, length, stored_length, compression FROM chunks WHERE digest IN ({marks})"  # noqa: E501, S608
            rows = self.db.execute(sql, part)
            for d, *loc in rows:
                out[bytes(d)] = Location(bytes(loc[0]), *loc[1:])
        return out

    async def packs(self) -> set[bytes]:
        rows = await self._run(lambda: self.db.execute("SELECT pack FROM packs").fetchall())
        return {bytes(r[0]) for r in rows}

    # ------------------------------------------------------------ updates

    async def record(self, index: PackIndex) -> None:
        await self._run(lambda: self._record_sync([index]))

    def _record_sync(self, indexes: Iterable[PackIndex]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for ix in indexes:
                self.db.execute(
                    "INSERT OR REPLACE INTO packs (pack, size) VALUES (?, ?)",
                    (ix.pack, ix.size),
                )
                self.db.executemany(
                    "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (e.digest, ix.pack, e.offset, e.length, e.stored_length, e.compression)
                        for e in ix.entries
                    ],
                )

    async def forget_pack(self, pack: bytes) -> None:
        """The pack is gone from the peer: its chunks must be shipped again."""
        await self._run(lambda: self._forget_sync([pack]))

    def _forget_sync(self, packs: Sequence[bytes]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for p in packs:
                self.db.execute("DELETE FROM chunks WHERE pack = ?", (p,))
                self.db.execute("DELETE FROM packs WHERE pack = ?", (p,))

    # ------------------------------------------------------------ sync

    async def sync(self, backend: Backend) -> SyncStats:
        """Reconcile with the peer's ``index/`` listing, page by page.

        Mark and sweep keeps memory bounded by one page, not by the peer: each
        listed pack is noted in a temporary table; packs not noted had their
        index removed and are dropped. (Stamping each row with a generation
        wrote every known pack on every run: a new WAL, two syncs, and two more
        at close for a re-run that changed nothing. The temporary table is
        SQLite's temp database: never synced, gone with the connection.)"""
        await self._run(self._start_listing_sync)
        loaded = 0
        page: list[bytes] = []
        skipped = _Skips(backend)
        async for info in backend.list(INDEX):
            name = _INDEX_NAME.fullmatch(info.key)
            if name is None:
                skipped.add(info.key, "not an index name")
                continue
            page.append(bytes.fromhex(name.group(2)))
            if len(page) >= _BATCH:
                loaded += await self._sync_page(backend, page, skipped)
                page = []
        loaded += await self._sync_page(backend, page, skipped)
        dropped, total = await self._run(self._sweep_sync)
        if skipped.count > MAX_SKIP_REPORTS:
            log.warning("destination %r: skipped %d index objects", backend.name, skipped.count)
        reports = tuple(skipped.reports)
        return SyncStats(loaded, dropped, total, skipped.count, reports)

    def _start_listing_sync(self) -> None:
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS listed (pack BLOB PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.listed")

    async def _sync_page(self, backend: Backend, page: list[bytes], skipped: _Skips) -> int:
        if not page:
            return 0
        missing = await self._run(lambda: self._stamp_sync(page))
        sem = asyncio.Semaphore(_SYNC_FETCHES)

        async def fetch(pack: bytes) -> PackIndex | None:
            key = index_key(pack)
            async with sem:
                try:
                    ix = PackIndex.from_bytes(await backend.get(key))
                except NotFoundError:  # removed between list and get
                    return None
                except IntegrityError as exc:
                    # Left out of the cache, the pack's chunks are shipped
                    # again in a new pack: safe, and verify names the damage.
                    skipped.add(key, str(exc))
                    return None
            if ix.pack != pack:
                skipped.add(key, f"describes pack {ix.pack.hex()}")
                return None
            return ix

        found = [ix for ix in await asyncio.gather(*map(fetch, missing)) if ix]
        await self._run(lambda: self._record_sync(found))
        return len(found)

    def _stamp_sync(self, page: list[bytes]) -> list[bytes]:
        """Note the listed packs (temp.listed); return the ones not known."""
        marks = ",".join("?" * len(page))
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO temp.listed VALUES (?)", [(p,) for p in page]
            )
            known = {
                bytes(r[0])
                for r in self.db.execute(
                    f"SELECT pack FROM packs WHERE pack IN ({marks})",  # noqa: S608
                    page,
                )
            }
        return [p for p in page if p not in known]

    def _sweep_sync(self) -> tuple[int, int]:
        stale = [
            bytes(r[0])
            for r in self.db.execute(
                "SELECT pack FROM packs WHERE pack NOT IN (SELECT pack FROM temp.listed)"
            )
        ]
        self._forget_sync(stale)
        self.db.execute("DELETE FROM temp.listed")
        total = self.db.execute("SELECT COUNT(*) FROM packs").fetchone()[0]
        return len(stale), int(total)
