"""``replicator bench delta``: wire efficiency of the real backfill pipeline.

For each workload of :mod:`replicator.bench.workloads`, the ``before`` tree
is backfilled to a fresh filesystem peer, then the ``after`` tree; the
second run's shipped bytes are compared with the bytes that changed and
with what a whole-object replicator would ship (every changed file again).
*Shipped* is everything that crossed the wire in the second run: the new
packs, their indexes and the new manifests (every object the peer stores
is write-once, so the growth of each prefix is exactly what was sent); the
targets are checked on that total.
The same run also times fs → fs backfills of one large file (fresh, and
after its mtime moved) against baselines measured on the same bytes, and
the peak RSS growth of backfilling one large file in a child process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from replicator import _native
from replicator.bench.chunk import parse_size
from replicator.bench.workloads import MiB, Workload, generate
from replicator.config import (
    ChunkingSettings,
    FsDestinationSettings,
    FsSourceSettings,
    Settings,
    StoreSettings,
)
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.summary import BackfillSummary
from replicator.pipeline.windows import CHUNK_THREADS

PEER = "peer"


def _settings(root: Path) -> Settings:
    return Settings(
        source=FsSourceSettings(path=root / "src"),
        destinations=[FsDestinationSettings(name=PEER, path=root / "peer")],
        store=StoreSettings(cache_dir=root / "cache"),
        chunking=ChunkingSettings(),
    )


def _write_tree(root: Path, files: dict[str, bytes], mtime_ns: int) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_bytes() == data:
            continue  # unchanged files keep their identity (mtime)
        path.write_bytes(data)
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _tree_bytes(root: Path, sub: str) -> int:
    base = root / "peer" / sub
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.exists() else 0


def _store_sizes(root: Path) -> dict[str, int]:
    return {s: _tree_bytes(root, s) for s in ("packs", "index", "manifests")}


async def _step(settings: Settings) -> BackfillSummary:
    summary = await run_backfill(settings)
    if summary.errors:
        raise click.ClickException(f"backfill failed: {summary.error_samples}")
    return summary


def _full_copy_bytes(w: Workload) -> int:
    """What a whole-object replicator ships for the second version."""
    return sum(len(d) for k, d in w.after.items() if w.before.get(k) != d)


def _measure(w: Workload, avg_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as tmp:
        root = Path(tmp)
        settings = _settings(root)
        _write_tree(root / "src", w.before, 1_700_000_000_000_000_000)
        asyncio.run(_step(settings))
        before = _store_sizes(root)
        _write_tree(root / "src", w.after, 1_700_000_100_000_000_000)
        second = asyncio.run(_step(settings))
        after = _store_sizes(root)
    sent = {k: after[k] - before[k] for k in after}
    data, step_meta = sent["packs"], sent["index"] + sent["manifests"]
    if data != second.stored_bytes[PEER]:
        raise click.ClickException(f"pack growth {data} != stored bytes {second.stored_bytes}")
    shipped = data + step_meta
    meta = after["index"] + after["manifests"]
    if w.kind == "small_edit":
        allowance = w.edits * (w.changed_bytes // w.edits + 2 * avg_size)
    else:
        allowance = int(1.05 * w.changed_bytes)
    return {
        "changed_bytes": w.changed_bytes,
        "shipped_bytes": shipped,
        "shipped_data_bytes": data,
        "shipped_metadata_bytes": step_meta,
        "full_copy_bytes": _full_copy_bytes(w),
        "shipped_vs_changed": shipped / w.changed_bytes,
        "shipped_vs_full_copy": shipped / _full_copy_bytes(w),
        "metadata_vs_data": meta / max(after["packs"], 1),
        "target_bytes": allowance,
        "meets_target": shipped <= allowance,
    }


def _throughput(size: int) -> dict[str, float]:
    """fs → fs backfill of one file, against baselines on the same bytes.

    *fresh*: the peer has nothing, so every byte is written and fsynced:
    compared with writing the file alone (write + fsync). *changed*: the
    file's mtime moved, so it is read and chunked in full but ships nothing
    (the steady state of a checkpoint series): compared with fused
    chunk+hash, and with the native file → chunk list in read mode. Every
    baseline runs on the thread count backfill chunks with (CHUNK_THREADS)."""
    data = os.urandom(size)
    threads = CHUNK_THREADS
    fused = _best(lambda: _native.chunk_buffer(data, threads=threads, whole_digest=False))
    fused_whole = _best(lambda: _native.chunk_buffer(data, threads=threads))
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as tmp:
        root = Path(tmp)
        disk = _best(lambda: _write_fsync(root / "disk.bin", data), reps=2)
        (root / "disk.bin").unlink()
        _write_tree(root / "src", {"big.bin": data}, 1_700_000_000_000_000_000)
        fresh = _timed_step(root)
        path = root / "src" / "big.bin"
        file_chunk = _best(lambda: _native.chunk_file(path, threads=threads, mmap=False))
        os.utime(path, ns=(1_700_000_100_000_000_000,) * 2)
        changed = _timed_step(root)
    rate = {k: size / v for k, v in (("fresh", fresh), ("changed", changed))}
    return {
        "threads": threads,
        "backfill_fresh_gbps": rate["fresh"] / 1e9,
        "backfill_changed_gbps": rate["changed"] / 1e9,
        "fused_gbps": size / fused / 1e9,
        "disk_write_fsync_gbps": size / disk / 1e9,
        "fresh_vs_disk_write": disk / fresh,
        "fresh_vs_fused": fused / fresh,
        "changed_vs_fused": fused / changed,
        "changed_vs_fused_with_whole_digest": fused_whole / changed,
        "changed_vs_file_chunk_read_mode": file_chunk / changed,
    }


def _timed_step(root: Path) -> float:
    started = time.perf_counter()
    asyncio.run(_step(_settings(root)))
    return time.perf_counter() - started


def _write_fsync(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _best(fn: Any, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


# Runs in a child so the parent's buffers do not count; the baseline is the
# high-water mark after imports, before the backfill starts.
_RSS_CHILD = """
import asyncio, json, sys
from pathlib import Path
from replicator.bench.delta import _settings, _step
from replicator.memory import peak_rss_bytes, pin_mmap_threshold

pin_mmap_threshold()  # as the replicator command does
base = peak_rss_bytes()
asyncio.run(_step(_settings(Path(sys.argv[1]))))
print(json.dumps({"baseline": base, "peak": peak_rss_bytes()}))
"""


def _rss_growth(size: int) -> int:
    """Peak RSS growth of a child process backfilling one ``size``-byte file."""
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        with open(root / "src" / "big.bin", "wb") as f:
            for _ in range(size // (64 * MiB)):
                f.write(os.urandom(64 * MiB))
            f.write(os.urandom(size % (64 * MiB)))
        out = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(root)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return int(figures["peak"]) - int(figures["baseline"])


def _table(result: dict[str, Any]) -> str:
    lines = [
        "shipped = data + metadata: every pack, index and manifest byte of the second run",
        f"{'workload':32} {'changed':>10} {'data':>10} {'metadata':>9} {'shipped':>10} "
        f"{'/changed':>9} {'/full copy':>10} {'meta/data':>9} {'target':>10}",
    ]
    for name, r in result["workloads"].items():
        verdict = "met" if r["meets_target"] else "MISSED"
        lines.append(
            f"{name:32} {r['changed_bytes']:>10} {r['shipped_data_bytes']:>10} "
            f"{r['shipped_metadata_bytes']:>9} {r['shipped_bytes']:>10} "
            f"{r['shipped_vs_changed']:>9.3f} {r['shipped_vs_full_copy']:>10.4f} "
            f"{r['metadata_vs_data']:>9.4%} {r['target_bytes']:>10} {verdict}"
        )
    for key, value in result.get("throughput", {}).items():
        lines.append(f"{key:40} {value:.3f}")
    if "peak_rss_growth_bytes" in result:
        lines.append(f"{'peak_rss_growth_bytes':40} {result['peak_rss_growth_bytes']}")
    return "\n".join(lines)


@click.command()
@click.option("--scale", default="64MiB", show_default=True, help="Bytes per workload.")
@click.option(
    "--big-size",
    default="1GiB",
    show_default=True,
    help="File size for the backfill throughput run (0 skips it).",
)
@click.option(
    "--rss-size",
    default="0",
    show_default=True,
    help="File size for the peak-RSS run (0 skips it; 4GiB shows the bound).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def delta(scale: str, big_size: str, rss_size: str, as_json: bool) -> None:
    """Bytes shipped vs bytes changed, vs a full-copy replicator, and metadata overhead."""
    avg = ChunkingSettings().avg_size
    result: dict[str, Any] = {
        "workloads": {w.name: _measure(w, avg) for w in generate(parse_size(scale))},
    }
    big, rss = (0 if v.strip() == "0" else parse_size(v) for v in (big_size, rss_size))
    if big:
        result["throughput"] = _throughput(big)
    if rss:
        result["peak_rss_growth_bytes"] = _rss_growth(rss)
        result["rss_file_bytes"] = rss
    click.echo(json.dumps(result, indent=2) if as_json else _table(result))
