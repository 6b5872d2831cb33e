"""A file over 1 GiB restores byte-for-byte through the CLI, and the restore
process never holds the object in memory (its peak RSS is measured)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from replicator._native import ChunkerParams
from replicator.store.backends import FsBackend
from tests.integration.conftest import StoreUnderTest
from tests.integration.store_builder import T0, StoreBuilder, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BLOCK = 16 * 1024 * 1024
SIZE = 64 * BLOCK + 4097  # just over 1 GiB, not a multiple of anything
#: Far below the object's size: reads in flight plus the interpreter.
RSS_LIMIT = 400 * 1024 * 1024

# Runs the command in a child so that its peak RSS is its own alone. VmHWM,
# not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec,
# so a child would report the (large) test process's peak as its own.
_CHILD = """
import json, re, sys
from pathlib import Path
from replicator.commands.restore import restore_command
try:
    restore_command(sys.argv[1:])
except SystemExit as exc:
    hwm = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())
    print(json.dumps({"exit": exc.code, "max_rss": int(hwm.group(1)) * 1024}), file=sys.stderr)
    raise
"""


def write_source(path: Path, seed: int = 1) -> None:
    """Random 16 MiB blocks; every fourth repeats an earlier one, so the
    manifest's runs jump back into earlier packs (deduplicated chunks)."""
    rng = random.Random(seed)
    blocks: list[bytes] = []
    with path.open("wb") as f:
        for i in range(SIZE // BLOCK):
            block = blocks[rng.randrange(len(blocks))] if i % 4 == 3 else rng.randbytes(BLOCK)
            if len(blocks) < 8:
                blocks.append(block)
            f.write(block)
        f.write(rng.randbytes(SIZE % BLOCK))


def same_bytes(a: Path, b: Path) -> int:
    with a.open("rb") as fa, b.open("rb") as fb:
        n = 0
        while True:
            x, y = fa.read(BLOCK), fb.read(BLOCK)
            assert x == y, f"differs in the block at {n}"
            if not x:
                return n
            n += len(x)


async def test_a_file_over_1_gib_restores_byte_for_byte(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    await asyncio.to_thread(write_source, src)
    backend = FsBackend(tmp_path / "peer", "fs-test")
    params = ChunkerParams()  # the production defaults: 16/64/256 KiB
    builder = StoreBuilder(backend, params, pack_size=32 * 1024 * 1024)
    await builder.init()
    manifest = await builder.put_file("models/big model.bin", src, T0)
    store = StoreUnderTest("fs", backend, root=tmp_path / "peer")
    config = write_config(tmp_path / "replicator.toml", store, params)
    out = tmp_path / "out"
    args = ["--config", str(config), "--destination", "peer", "--key", "models/big model.bin"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CHILD, *args, "--to", str(out), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    child = json.loads(proc.stderr.strip().splitlines()[-1])
    assert summary["objects"] == 1 and summary["bytes"] == SIZE
    compared = await asyncio.to_thread(same_bytes, src, out / "models" / "big model.bin")
    assert compared == SIZE
    assert child["max_rss"] < RSS_LIMIT
    await backend.close()
    print(
        f"[fs] {SIZE} bytes, {manifest.chunk_count()} chunks in {len(manifest.runs)} runs over "
        f"{len(manifest.packs())} packs: restored and compared byte-for-byte; restore peak RSS "
        f"{child['max_rss'] // 2**20} MiB; restore {summary['elapsed_seconds']:.1f}s"
    )
