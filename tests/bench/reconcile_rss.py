"""Peak RSS of the reconcile comparison for a listing of many keys.

A measurement, not a test (pytest does not collect it). A child process
merges a synthetic source listing of ``--keys`` objects with a synthetic
peer listing of the same keys (manifest names as a peer lists them) through
``pipeline.compare`` -- the external sort of the peer side included -- and
prints its peak RSS growth as JSON. For contrast, ``--mode set`` keeps every
listed key in a set, as the removal pass did before (``_seen``).

    .venv/bin/python -m tests.bench.reconcile_rss --keys 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from replicator.memory import peak_rss_bytes
from replicator.origins import ObjectVersion
from replicator.pipeline.compare import compare, sorted_by_key
from replicator.store.format import SourceIdentity, manifest_key

T0 = 1_700_000_000_000_000_000


def _key(i: int) -> str:
    return f"datasets/run-{i // 1000:04d}/shard {i % 1000:03d}.parquet"


async def _source(n: int) -> AsyncIterator[ObjectVersion]:
    for i in range(n):
        yield ObjectVersion(_key(i), 1000 + i, T0 + i, mtime_ns=T0, inode=i)
        if i % 10_000 == 0:
            await asyncio.sleep(0)


async def _peer(n: int) -> AsyncIterator[tuple[str, str]]:
    # Every key's newest manifest name, in the order a peer lists them
    # (escaped names; for these keys also key order).
    version = SourceIdentity("fs", "src", "k", "", "e", 1, T0).version_name(False)
    for i in range(n):
        key = _key(i)
        yield key, manifest_key("src", key, version)
        if i % 10_000 == 0:
            await asyncio.sleep(0)


async def _stream(n: int) -> dict[str, int]:
    counts = {"pairs": 0, "both": 0}
    async for pair in compare(_source(n), sorted_by_key(_peer(n))):
        counts["pairs"] += 1
        counts["both"] += pair.source is not None and pair.peer is not None
    return counts


async def _set(n: int) -> dict[str, int]:
    seen: set[str] = set()
    async for obj in _source(n):
        seen.add(obj.key)
    both = 0
    async for key, _ in _peer(n):
        both += key in seen
    return {"pairs": len(seen), "both": both}


def child(mode: str, n: int) -> None:
    base = peak_rss_bytes()
    started = time.monotonic()
    counts = asyncio.run(_stream(n) if mode == "stream" else _set(n))
    peak = peak_rss_bytes()
    out: dict[str, object] = {"mode": mode, "keys": n, "baseline_bytes": base}
    out |= {"peak_bytes": peak, "growth_bytes": peak - base} | counts
    out["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(out))


def measure(mode: str, n: int) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.reconcile_rss", "--child", mode, "--keys", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--mode", choices=["stream", "set", "both"], default="both")
    ap.add_argument("--child", choices=["stream", "set"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.keys)
        return
    for mode in ("stream", "set") if args.mode == "both" else (args.mode,):
        print(json.dumps(measure(mode, args.keys)))


if __name__ == "__main__":
    main()
