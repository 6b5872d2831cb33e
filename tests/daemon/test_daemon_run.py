"""`replicator run` as a subprocess: what a training job does to a directory
(write, overwrite rapidly, save via temp-then-rename, delete) reaches both
peers, and every version the peers hold restores byte-for-byte with
`replicator restore --at`.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from tests.daemon.harness import (
    PEERS,
    Daemon,
    Written,
    at_arg,
    log_events,
    peer_manifests,
    peer_state,
    replicator,
    source_state,
    wait_until,
    write_config,
)


def _restore(cfg: Path, peer: str, out: Path, *args: str) -> dict[str, bytes]:
    done = replicator(
        "restore", "--config", str(cfg), "--destination", peer, "--to", str(out), *args
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return source_state(out)


def _wait_peers(tmp: Path, tree: dict[str, bytes], daemon: Daemon) -> None:
    for peer in PEERS:

        def there(p: str = peer) -> bool:
            return peer_state(tmp / p) == tree

        wait_until(there, f"tree at peer {peer}", daemon)


def _job(src: Path, written: Written, rng: random.Random) -> dict[str, int]:
    """The first part of the load: returns the event times the test checks later."""
    times = {"shard": written.write(src, "data/shard-0.jsonl", b'{"tokens": [1, 2, 3]}\n' * 2000)}
    model = rng.randbytes(400_000)
    times["model1"] = written.write(src, "ckpt/model.safetensors", model, via_temp=True)
    for i in range(40):  # a step counter rewritten as fast as Python can
        written.write(src, "ckpt/step.json", b'{"step": %d}' % i + rng.randbytes(30_000))
    written.write(src, "ckpt/old.safetensors", rng.randbytes(50_000))
    # Larger than a read window (8 MiB): read in several windows.
    written.write(src, "ckpt/optimizer.pt", rng.randbytes(12 * 1024 * 1024 + 17))
    return times


def test_changes_reach_both_peers_and_every_version_restores(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    daemon.wait_ready()
    written, rng = Written(), random.Random(8)
    times = _job(src, written, rng)
    _wait_peers(tmp_path, source_state(src), daemon)
    model = written.versions["ckpt/model.safetensors"][times["model1"]]
    # A new checkpoint that shares most bytes with the first; an old one removed.
    model2 = model[:150_000] + rng.randbytes(4096) + model[154_096:]
    written.write(src, "ckpt/model.safetensors", model2, via_temp=True)
    os.remove(src / "ckpt/old.safetensors")
    final = source_state(src)
    _wait_peers(tmp_path, final, daemon)
    assert daemon.stop() == 0, daemon.log_tail()

    durable = log_events(tmp_path / "daemon.log", "durable")
    for peer in PEERS:
        _check_peer(tmp_path, cfg, peer, written, times, durable)
    latencies = [d["latency_seconds"] for d in durable if d["kind"] == "created"]
    print(
        f"{sum(len(v) for v in written.versions.values())} versions written, "
        f"{len(durable)} durable at the peers (coalescing skips some of the 40 rapid rewrites); "
        f"event->durable p50 {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s"
    )


def _check_peer(
    tmp: Path,
    cfg: Path,
    peer: str,
    written: Written,
    times: dict[str, int],
    durable: list[dict[str, Any]],
) -> None:
    manifests = peer_manifests(tmp / peer)
    assert not [k for k in manifests if k.endswith(".tmp")], "a temp name was replicated"
    model = manifests["ckpt/model.safetensors"]
    assert [m.removed for m in model] == [False, False], "one version per rename"
    assert manifests["ckpt/old.safetensors"][-1].removed
    for versions in manifests.values():
        for m in versions:
            if not m.removed:
                written.check_manifest(m)
    # Every version logged durable at this peer is there (A ⊆ R).
    held = {(k, m.identity.event_time_ns) for k, ms in manifests.items() for m in ms}
    logged = {
        (d["key"], d["event_time_ns"])
        for d in durable
        if d["destination"] == peer and d["kind"] == "created"
    }
    assert logged <= held, sorted(logged - held)[:5]

    at_first = _restore(
        cfg, peer, tmp / f"r-{peer}-1", "--prefix", "", "--at", at_arg(times["model1"])
    )
    assert at_first == {
        "data/shard-0.jsonl": written.bytes_of("data/shard-0.jsonl", times["shard"]),
        "ckpt/model.safetensors": written.bytes_of("ckpt/model.safetensors", times["model1"]),
    }
    steps = [m for m in manifests["ckpt/step.json"] if not m.removed]
    for m in (steps[0], steps[len(steps) // 2], steps[-1]):
        t = m.identity.event_time_ns
        got = _restore(
            cfg, peer, tmp / f"r-{peer}-{t}", "--key", "ckpt/step.json", "--at", at_arg(t)
        )
        assert got == {"ckpt/step.json": written.bytes_of("ckpt/step.json", t)}
    latest = _restore(cfg, peer, tmp / f"r-{peer}-latest", "--prefix", "")
    assert latest == source_state(tmp / "src")
    print(f"peer {peer}: {len(steps)} of 40 step.json versions durable, all restorable")


def test_sigterm_during_load_drains_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    daemon.wait_ready()
    written, rng = Written(), random.Random(5)
    for i in range(60):
        written.write(src, f"load/f{i % 15}.bin", rng.randbytes(rng.randrange(1, 200_000)))
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    rc = daemon.wait()
    took = time.monotonic() - started
    assert rc == 0, daemon.log_tail()
    stopped = log_events(tmp_path / "daemon.log", "stopped") + log_events(
        tmp_path / "daemon.log", "stopped with changes left for the next start"
    )
    assert stopped, daemon.log_tail()
    # What it reported durable is durable, with the bytes that were written.
    durable = log_events(tmp_path / "daemon.log", "durable")
    for peer in PEERS:
        manifests = peer_manifests(tmp_path / peer)
        index = {(k, m.identity.event_time_ns): m for k, ms in manifests.items() for m in ms}
        for d in (d for d in durable if d["destination"] == peer):
            written.check_manifest(index[(d["key"], d["event_time_ns"])])
        peer_state(tmp_path / peer)  # no manifest names a missing chunk
    print(
        f"SIGTERM after 60 writes: exit 0 in {took:.2f} s (drain bound 20 s), "
        f"{len(durable)} versions durable, drained={stopped[0].get('drained')}"
    )
