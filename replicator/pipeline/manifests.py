"""Manifests: built from durable chunk locations, stored put-if-absent.

A manifest is built only from :class:`Location` values, which exist only
once their pack and index are durable (``durable.resolve``), so the write
order packs -> index -> manifest holds by construction (invariant 1).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii as _q

from replicator import failpoints
from replicator._native import ChunkerParams, blake3_digest
from replicator.chunking import DIGEST_SIZE
from replicator.events import ChangeEvent
from replicator.store.backend import Backend
from replicator.store.format import FORMAT_VERSION, ChunkRef, Manifest, PackRun, SourceIdentity
from replicator.store.heads import Head, head_of
from replicator.store.identity_text import event_time_text
from replicator.store.index_cache import Location
from replicator.store.manifest_store import ManifestStore, manifests_of
from replicator.store.placed import Placed
from replicator.store.versions import sequencer_field

#: A manifest ready to store: (bucket, key, version name, its bytes).
#: (bucket, key, version name, bytes, head): a manifest written out, and the
#: head (store/heads.py) a format 3 peer records beside it for the held check.
ManifestText = tuple[str, str, str, bytes, Head]

EMPTY_DIGEST = blake3_digest(b"")


def runs_of(digests: bytes | bytearray, locations: Sequence[Location]) -> tuple[PackRun, ...]:
    """Group chunks stored back to back in one pack into runs (one GET each)."""
    runs: list[PackRun] = []
    pack, start, end = b"", 0, 0
    refs: list[ChunkRef] = []
    for i, loc in enumerate(locations):
        if refs and not (loc.pack == pack and loc.offset == end):
            runs.append(PackRun(pack, start, tuple(refs)))
            refs = []
        if not refs:
            pack, start, end = loc.pack, loc.offset, loc.offset
        d = bytes(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
        refs.append(ChunkRef(d, loc.length, loc.stored_length, loc.compression))
        end += loc.stored_length
    if refs:
        runs.append(PackRun(pack, start, tuple(refs)))
    return tuple(runs)


def placed_runs(
    digests: bytes | bytearray, placed: Placed, names: Sequence[bytes]
) -> tuple[PackRun, ...]:
    """``runs_of`` straight from compact placements (``names``: their packs'
    durable names, as ``pack_names`` gives them): no record per chunk on the way."""
    runs: list[PackRun] = []
    pack, start, end = b"", 0, 0
    refs: list[ChunkRef] = []
    view = memoryview(digests)
    ix, offsets, lengths, stored, zstd = (
        placed.pack_ix,
        placed.offsets,
        placed.lengths,
        placed.stored,
        placed.compressed,
    )
    for i in range(len(placed)):
        p, off = names[ix[i]], offsets[i]
        if refs and not (p == pack and off == end):
            runs.append(PackRun(pack, start, tuple(refs)))
            refs = []
        if not refs:
            pack, start, end = p, off, off
        n, s = lengths[i], stored[i]
        d = view[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].tobytes()
        refs.append(ChunkRef(d, n, s, "zstd") if zstd[i] else ChunkRef(d, n, n))
        end += s
    if refs:
        runs.append(PackRun(pack, start, tuple(refs)))
    return tuple(runs)


def placed_manifest(
    identity: SourceIdentity,
    digest: bytes,
    params: ChunkerParams,
    digests: bytes | bytearray,
    *,
    placed: Placed,
    names: Sequence[bytes],
) -> Manifest:
    return Manifest(identity, False, digest, params, placed_runs(digests, placed, names))


def object_manifest(
    identity: SourceIdentity,
    digest: bytes,
    params: ChunkerParams,
    digests: bytes | bytearray,
    locations: Sequence[Location],
) -> Manifest:
    return Manifest(identity, False, digest, params, runs_of(digests, locations))


def tombstone(identity: SourceIdentity, params: ChunkerParams) -> Manifest:
    return Manifest(identity, True, EMPTY_DIGEST, params, ())


def _num(v: int | None) -> str:
    return "null" if v is None else str(v)


#: ``event_time_text`` of whole seconds, without the "Z" (a batch's files
#: were mostly written in the same few seconds); bounded by clearing.
_SECONDS: dict[int, str] = {}


def fast_event_time(ns: int) -> str:
    """``identity_text.event_time_text(ns)``, the same text at a fraction of
    its cost (tests compare the two): the microseconds rounded as
    ``datetime.fromtimestamp`` rounds ``ns / 1e9`` (half to even, a carry
    into the next second), the date and time of the second looked up."""
    if ns < 0:
        return event_time_text(ns)
    frac, whole = math.modf(ns / 1e9)
    sec, us = int(whole), round(frac * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    prefix = _SECONDS.get(sec)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[sec] = event_time_text(sec * 1_000_000_000).removesuffix("Z")
    return f"{prefix}.{us:06d}Z" if us else f"{prefix}Z"


class CreatedTexts:
    """Manifests of created versions written straight to text, in one pass.

    The bytes and version name are exactly ``Manifest.to_bytes`` and
    ``Manifest.version_name`` of the manifest ``placed_manifest`` builds
    (manifest format 2; tests/unit/test_batch_commit.py compares them), made
    from the event and the batch's compact placements: no SourceIdentity,
    Manifest, PackRun or ChunkRef per object, which cost more than the text
    itself in a batch of small objects. The ``object`` is written with its
    keys in sorted order, as ``identity_text.object_json`` does."""

    def __init__(self, params: ChunkerParams) -> None:
        c = params
        self._head = (
            f'{{"chunker":[{c.min_size},{c.avg_size},{c.max_size},{c.normalization},{c.seed}],'
            '"digest":"'
        )
        assert FORMAT_VERSION == 2, "CreatedTexts writes format 2 manifests"

    def text(
        self,
        event: ChangeEvent,
        ident: tuple[int, bytes, str, int],
        chunks: tuple[bytes, Placed, int, int],
        names: Sequence[str],
    ) -> ManifestText:
        """``event``'s manifest. ``ident``: (size, whole-object digest, etag,
        observation number); ``chunks``: (chunk digests, placements, first
        and end chunk of the object in both); ``names``: the hex names of
        the placements' packs."""
        size, digest, etag, observed = ident
        t = event.event_time_ns
        key, source, bucket = _q(event.key), _q(event.source), _q(event.bucket)
        vid, seq, qetag = _q(event.version_id), _q(event.sequencer), _q(etag)
        mtime, inode = _num(event.mtime_ns), _num(event.inode)
        hashed = (
            f"[{source},{bucket},{key},{vid},{qetag},{size},{t},{seq},false,"
            f"{mtime},{inode},{observed}]"
        )
        suffix = blake3_digest(hashed.encode()).hex()[:24]
        name = f"{t:020d}-{sequencer_field(event.sequencer)}-{observed:020d}-{suffix}"
        obj = (
            f'{{"bucket":{bucket},"etag":{qetag},"event_time":{_q(fast_event_time(t))},'
            f'"event_time_ns":{t},"inode":{inode},"key":{key},"mtime_ns":{mtime},'
            f'"observed":{observed},"sequencer":{seq},"size":{size},"source":{source},'
            f'"version_id":{vid}}}'
        )
        runs = _runs_text(*chunks, names)
        data = (
            f'{self._head}{digest.hex()}","kind":"created","object":{obj},'
            f'"runs":[{runs}],"version":2}}'
        )
        head = (False, event.source, event.bucket, event.key, event.version_id, etag, size, t)
        return (
            event.bucket,
            event.key,
            name,
            data.encode(),
            (*head, event.mtime_ns, event.inode, observed),
        )


def _runs_text(digests: bytes, placed: Placed, lo: int, hi: int, names: Sequence[str]) -> str:
    """The ``runs`` of ``placed_runs`` over chunks ``lo`` to ``hi``, as ``to_bytes`` writes them."""
    if hi - lo == 1:  # most small objects: one chunk, one run
        return _one_run(digests, placed, lo, names)
    runs: list[str] = []
    chunks: list[str] = []
    pack, start, end = -1, 0, 0
    ix, offsets, lengths, stored, zstd = (
        placed.pack_ix,
        placed.offsets,
        placed.lengths,
        placed.stored,
        placed.compressed,
    )
    for i in range(lo, hi):
        p, off = ix[i], offsets[i]
        if chunks and not (p == pack and off == end):
            runs.append(
                f'{{"chunks":[{",".join(chunks)}],"offset":{start},"pack":"{names[pack]}"}}'
            )
            chunks = []
        if not chunks:
            pack, start, end = p, off, off
        d = digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].hex()
        n = lengths[i]
        chunks.append(f'["{d}",{n},{stored[i]},"zstd"]' if zstd[i] else f'["{d}",{n}]')
        end += stored[i]
    if chunks:
        runs.append(f'{{"chunks":[{",".join(chunks)}],"offset":{start},"pack":"{names[pack]}"}}')
    return ",".join(runs)


def _one_run(digests: bytes, placed: Placed, i: int, names: Sequence[str]) -> str:
    """``_runs_text`` of the single chunk ``i`` (the same text)."""
    d = digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].hex()
    n, stored = placed.lengths[i], placed.stored[i]
    chunk = f'["{d}",{n},{stored},"zstd"]' if placed.compressed[i] else f'["{d}",{n}]'
    pack = names[placed.pack_ix[i]]
    return f'{{"chunks":[{chunk}],"offset":{placed.offsets[i]},"pack":"{pack}"}}'


async def put_manifest(store: Backend | ManifestStore, manifest: Manifest) -> bool:
    """Store the manifest unless that version's manifest exists: True if written.

    Its name pins the whole identity, so an existing one has equal content
    (a replay); put-if-absent keeps concurrent writers from replacing it."""
    failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
    (written,) = await manifests_of(store).put_many([manifest])
    if isinstance(written, BaseException):
        raise written
    failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
    return written


class ManifestCommits:
    """Group commit of the manifests going to one peer.

    Manifests handed in while a batch is being written go together in the
    next one (one ``put_texts`` of the peer's ManifestStore): a filesystem
    peer makes a whole batch durable with a couple of syncs in one thread
    hop, an S3 peer gets the batch's PUTs in flight at once. Each caller is
    answered (written, present, or its own error) only once its manifest is
    durable. ``store`` is the peer's ManifestStore, or a Backend of an
    opened peer. Callers hand in groups (a batch of small objects: one
    future per group, not per manifest), as Manifests or as their text."""

    def __init__(self, store: Backend | ManifestStore, limit: int = 512) -> None:
        self.store = manifests_of(store)
        self.backend = self.store.backend
        self.limit = limit
        self._pending: list[tuple[Sequence[Manifest | ManifestText], _Answers]] = []
        self._writer: asyncio.Task[None] | None = None

    async def put(self, manifest: Manifest) -> bool:
        (answer,) = await self._put([manifest])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def put_many(self, manifests: Sequence[Manifest]) -> list[bool | BaseException]:
        """``put`` of each manifest, answered together: written, present, or
        that manifest's own error (a batch of small objects: no task each)."""
        return await self._put(manifests)

    async def put_texts(self, texts: Sequence[ManifestText]) -> list[bool | BaseException]:
        """``put_many`` of manifests already written out (``CreatedTexts``)."""
        return await self._put(texts)

    async def _put(self, group: Sequence[Manifest | ManifestText]) -> list[bool | BaseException]:
        if not group:
            return []
        done: _Answers = asyncio.get_running_loop().create_future()
        self._pending.append((group, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let the manifests released together join
            while self._pending:
                n, size = 0, 0
                while n < len(self._pending) and (n == 0 or size < self.limit):
                    size += len(self._pending[n][0])
                    n += 1
                batch, self._pending = self._pending[:n], self._pending[n:]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Sequence[Manifest | ManifestText], _Answers]]) -> None:
        texts: list[ManifestText] = []
        answers: list[bool | BaseException] = []
        todo: list[int] = []  # where each text's answer goes
        for group, _ in batch:
            for item in group:
                try:
                    texts.append(item if isinstance(item, tuple) else text_of(item))
                    todo.append(len(answers))
                    answers.append(False)
                except Exception as exc:  # that manifest's own answer
                    answers.append(exc)
        try:
            failpoints.hit(failpoints.BEFORE_MANIFEST_PUT)
            written = await put_texts(self.store, texts)
            failpoints.hit(failpoints.AFTER_MANIFEST_PUT)
        except Exception as exc:  # the whole batch failed (a sync, the peer)
            written = [exc] * len(texts)
        for i, answer in zip(todo, written, strict=True):
            answers[i] = answer
        start = 0
        for group, done in batch:
            if not done.done():  # else its caller was cancelled
                done.set_result(answers[start : start + len(group)])
            start += len(group)


_Answers = asyncio.Future[list[bool | BaseException]]


def text_of(manifest: Manifest) -> ManifestText:
    i = manifest.identity
    return (
        i.bucket,
        i.key,
        manifest.version_name,
        manifest.to_bytes(),
        head_of(manifest.removed, i),
    )


async def put_texts(
    store: ManifestStore, texts: Sequence[ManifestText]
) -> list[bool | BaseException]:
    """``store.put_many`` of manifests already written out: the store's own
    ``put_texts`` where it has one, else read back into Manifests."""
    direct = getattr(store, "put_texts", None)
    if direct is not None:
        return list(await direct(texts))
    return await store.put_many([Manifest.from_bytes(data) for _, _, _, data, _ in texts])
