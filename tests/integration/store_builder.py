"""A minimal, independent store writer for read-path tests.

It follows docs/store-format.md literally (packs, then their index, then
the manifest; chunks deduplicated against everything written before), so
the reader is tested against the specification rather than against the
daemon's own writer, and tests can place versions at exact event times.

With ``format_version=3`` manifests go into segments (§13), written here
from the text of the specification, not with replicator's segment codec:
each manifest in a segment of its own, or several at once with
``put_segment``.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from replicator._native import ChunkerParams, blake3_digest, chunk_buffer, chunk_file
from replicator.chunking import chunks_of
from replicator.store.backend import Backend
from replicator.store.format import (
    CONFIG_KEY,
    ChunkRef,
    IndexEntry,
    Manifest,
    PackIndex,
    PackRun,
    SourceIdentity,
    StoreConfig,
    encode_segment,
    index_key,
    pack_key,
)
from tests.integration.conftest import StoreUnderTest

SMALL = ChunkerParams(256, 1024, 4096)


@dataclass
class _OpenPack:
    buf: bytearray = field(default_factory=bytearray)
    entries: list[IndexEntry] = field(default_factory=list)


@dataclass
class StoreBuilder:
    backend: Backend
    params: ChunkerParams = field(default_factory=lambda: SMALL)
    bucket: str = "src"
    pack_size: int = 64 * 1024
    known: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)  # digest -> pack, offset
    manifests: list[Manifest] = field(default_factory=list)
    #: 2: one object per manifest; 3: manifests in segments.
    format_version: int = 2

    async def init(self) -> None:
        config = StoreConfig(self.params, version=self.format_version)
        await self.backend.put(CONFIG_KEY, config.to_bytes())

    async def _put_manifest(self, m: Manifest) -> None:
        if self.format_version == 3:
            await self.put_segment([m])
        else:
            await self.backend.put(m.store_key(), m.to_bytes())

    async def put_segment(self, manifests: list[Manifest]) -> str:
        """One segment holding ``manifests`` (one bucket), as §13 lays it out; its name."""
        bucket = manifests[0].identity.bucket
        entries = sorted(
            (m.store_key().removeprefix(f"manifests/{encode_segment(bucket)}/"), m)
            for m in manifests
        )
        body, rows = b"", []
        for _, m in entries:
            data = m.to_bytes()
            rows.append([m.identity.key, m.version_name, len(body), len(data), _b3(data)])
            body += data + b"\n"
        header = json.dumps(
            {
                "format": "replicator-segment",
                "version": 1,
                "bucket": bucket,
                "count": len(rows),
                "first": rows[0][0],
                "last": rows[-1][0],
                "entries": rows,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        segment = f"replicator-segment 1 {len(header):010d}\n".encode() + header + b"\n" + body
        h = _b3(segment)
        name = f"segments/{encode_segment(bucket)}/{h[:2]}/{h}"
        await self.backend.put(name, segment)
        return name

    async def put(self, key: str, data: bytes, t: int) -> Manifest:
        cl = chunk_buffer(data, self.params)
        assert cl.digest is not None
        return await self._write(
            key, data, cl.digest, [(c.offset, c.length, c.digest) for c in chunks_of(cl)], t
        )

    async def put_file(self, key: str, path: Path, t: int) -> Manifest:
        cl = chunk_file(path, self.params)
        assert cl.digest is not None
        chunks = [(c.offset, c.length, c.digest) for c in chunks_of(cl)]
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return await self._write(key, mm, cl.digest, chunks, t)

    async def remove(self, key: str, t: int) -> Manifest:
        ident = SourceIdentity("test", self.bucket, key, "", "", 0, t)
        m = Manifest(ident, True, blake3_digest(b""), self.params)
        await self._put_manifest(m)
        self.manifests.append(m)
        return m

    async def _write(
        self,
        key: str,
        data: bytes | mmap.mmap,
        digest: bytes,
        chunks: list[tuple[int, int, bytes]],
        t: int,
    ) -> Manifest:
        view = memoryview(data)
        pack = _OpenPack()
        for off, n, d in chunks:
            if d in self.known or any(e.digest == d for e in pack.entries):
                continue
            pack.entries.append(IndexEntry(d, len(pack.buf), n, n))
            pack.buf += view[off : off + n]
            if len(pack.buf) >= self.pack_size:
                await self._seal(pack)
                pack = _OpenPack()
        if pack.entries:
            await self._seal(pack)
        refs = [(d, n, *self.known[d]) for _off, n, d in chunks]
        ident = SourceIdentity("test", self.bucket, key, "", f'"{digest.hex()[:32]}"', len(view), t)
        m = Manifest(ident, False, digest, self.params, _runs(refs))
        await self._put_manifest(m)  # last: after packs + index
        self.manifests.append(m)
        return m

    async def _seal(self, pack: _OpenPack) -> None:
        data = bytes(pack.buf)
        name = blake3_digest(data)
        await self.backend.put(pack_key(name), data)
        await self.backend.put(
            index_key(name), PackIndex(name, len(data), tuple(pack.entries)).to_bytes()
        )
        for e in pack.entries:
            self.known[e.digest] = (name, e.offset)


def _b3(data: bytes) -> str:
    return blake3_digest(data).hex()


def _runs(refs: list[tuple[bytes, int, bytes, int]]) -> tuple[PackRun, ...]:
    """Consecutive chunks stored back to back in one pack form one run."""
    runs: list[tuple[bytes, int, list[ChunkRef]]] = []
    end = -1
    for digest, n, pack, offset in refs:
        if runs and runs[-1][0] == pack and end == offset:
            runs[-1][2].append(ChunkRef(digest, n, n))
        else:
            runs.append((pack, offset, [ChunkRef(digest, n, n)]))
        end = offset + n
    return tuple(PackRun(p, o, tuple(cs)) for p, o, cs in runs)


# ----------------------------------------------------------------- the CLI against a store


def write_config(
    path: Path,
    store: StoreUnderTest,
    params: ChunkerParams = SMALL,
    source: Path | None = None,
    format_version: int = 2,
) -> Path:
    """A replicator.toml whose destination "peer" is the store under test
    (and whose fs source, bucket "src", is ``source``; by default an empty
    directory beside the config, never one that holds the store)."""
    if source is None:
        source = path.parent / "source"
        source.mkdir(exist_ok=True)
    if store.root is not None:
        dest = f'type = "fs"\npath = "{store.root}"'
    else:
        assert store.endpoint is not None
        dest = (
            f'type = "s3"\nbucket = "{store.bucket}"\nendpoint_url = "{store.endpoint.url}"\n'
            f'region = "{store.endpoint.region}"\naddressing_style = "path"'
        )
    path.write_text(
        f'[source]\ntype = "fs"\npath = "{source}"\nbucket = "src"\n\n'
        f'[[destinations]]\nname = "peer"\n{dest}\n\n'
        f"[chunking]\nmin_size = {params.min_size}\navg_size = {params.avg_size}\n"
        f"max_size = {params.max_size}\n\n[store]\nformat_version = {format_version}\n"
    )
    return path


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_cli(command: click.Command, args: list[str], store: StoreUnderTest) -> CliResult:
    """Run a command in a thread (it starts its own event loop), with the
    store's credentials in the environment as the AWS chain expects them."""
    env: dict[str, str | None] = {}
    if store.endpoint is not None:
        env = {
            "AWS_ACCESS_KEY_ID": store.endpoint.access_key_id,
            "AWS_SECRET_ACCESS_KEY": store.endpoint.secret_access_key,
        }
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, command, args, env=env, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


# ----------------------------------------------------------------- a corpus for item 13

T0 = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


@dataclass
class Corpus:
    """What the store holds: per key, (event time, bytes or None if removed)."""

    history: dict[str, list[tuple[int, bytes | None]]] = field(default_factory=dict)

    def record(self, key: str, t: int, data: bytes | None) -> None:
        self.history.setdefault(key, []).append((t, data))

    def times(self) -> list[int]:
        return sorted({t for h in self.history.values() for t, _ in h})

    def state_at(self, t: int) -> dict[str, bytes]:
        out = {}
        for key, versions in self.history.items():
            before = [d for vt, d in sorted(versions, key=lambda v: v[0]) if vt <= t]
            if before and before[-1] is not None:
                out[key] = before[-1]
        return out


def blob(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


#: One version each: sizes at the chunker's bounds (SMALL) and awkward names.
SINGLES = [
    ("empty", 0),
    ("sizes/min", SMALL.min_size),
    ("sizes/max", SMALL.max_size),
    ("sizes/max+1", SMALL.max_size + 1),
    ("sizes/min-1", SMALL.min_size - 1),
    ("sizes/many", 37 * SMALL.max_size + 5),
    ("dir/with space.bin", 5000),
    ("plus+sign/a+b c.txt", 777),
    ("percent%20not-a-space%", 300),
    ("ünïcødé/日本語.txt", 2048),
    ("a..b", 100),
    ("x/..c/d..", 10),
    ("...", 3),
]


def checkpoint_versions(rng: random.Random) -> list[bytes]:
    """Partial rewrites, an append, a truncation to empty and regrowth, so
    that later versions share chunks spread over several packs."""
    model = blob(rng, 60_000)
    versions = [model]
    for _ in range(4):
        at = rng.randrange(len(model) - 2000)
        model = model[:at] + blob(rng, 1500) + model[at + 1500 :]
        versions.append(model)
    return [*versions, model + blob(rng, 9000), b"", model]


async def build_corpus(builder: StoreBuilder, seed: int = 13) -> Corpus:
    """Every case of item 13 at small chunk sizes (min 256, max 4096), one
    second of event time apart."""
    rng = random.Random(seed)
    await builder.init()
    plan: list[tuple[str, bytes | None]] = [(k, blob(rng, n)) for k, n in SINGLES]
    plan += [("ckpt/model.pt", v) for v in checkpoint_versions(rng)]
    # Tombstones: removed for good, and removed then recreated.
    plan += [("gone.txt", blob(rng, 500)), ("gone.txt", None)]
    plan += [("back.txt", b"first"), ("back.txt", None), ("back.txt", b"second life")]
    corpus = Corpus()
    for i, (key, data) in enumerate(plan, start=1):
        t = T0 + i * SECOND
        if data is None:
            await builder.remove(key, t)
        else:
            await builder.put(key, data, t)
        corpus.record(key, t, data)
    return corpus


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its '/'-joined relative name."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def manifests_with_chunk(builder: StoreBuilder, chunk: bytes) -> set[tuple[str, str]]:
    return {
        (m.identity.key, m.version_name)
        for m in builder.manifests
        if any(c.digest == chunk for r in m.runs for c in r.chunks)
    }


def latest(builder: StoreBuilder, key: str) -> Manifest:
    return [m for m in builder.manifests if m.identity.key == key][-1]
