"""kill -9 of `replicator run` at seeded random moments during a write load.

After each kill the daemon is started again (its start-up reconcile picks up
what the killed one had not finished). At the end: every version any run
logged as durable restores byte-for-byte from that peer (A ⊆ R), no
manifest at any peer names a missing pack or index, and the tree's final
state is at every peer. The seed is printed; set REPLICATOR_KILL_SEED to
replay a failing schedule, REPLICATOR_KILL_ITERATIONS for a longer soak.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

from replicator.store.backends import FsBackend
from tests.daemon.harness import (
    PEERS,
    Daemon,
    Written,
    log_events,
    peer_manifests,
    peer_state,
    source_state,
    wait_until,
    write_config,
)
from tests.integration.test_backfill import rebuild

KEYS = [f"ckpt/shard-{i}.bin" for i in range(6)] + ["data/train.jsonl", "step.json"]


def _operate(src: Path, written: Written, rng: random.Random) -> str:
    """One random change of the kind a training job makes."""
    key = rng.choice(KEYS)
    path = src / key
    roll = rng.random()
    if roll < 0.1 and path.exists():
        path.unlink()
        return "delete"
    if roll < 0.3 and key.endswith(".jsonl"):
        old = path.read_bytes() if path.exists() else b""
        written.write(src, key, old + rng.randbytes(rng.randrange(100, 20_000)))
        return "append"
    data = rng.randbytes(rng.choice([0, 1, 5000, 70_000, 300_000]))
    written.write(src, key, data, via_temp=rng.random() < 0.5)
    return "write"


def _load_then_kill(daemon: Daemon, src: Path, written: Written, rng: random.Random) -> int:
    """Change the tree until the seeded moment, then SIGKILL mid-load."""
    kill_at = time.monotonic() + rng.uniform(0.2, 2.5)
    ops = 0
    while time.monotonic() < kill_at:
        _operate(src, written, rng)
        ops += 1
        time.sleep(rng.choice([0, 0.001, 0.01, 0.05]))
    daemon.kill()
    return ops


def test_kill_9_at_random_moments_loses_no_durable_version(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLICATOR_KILL_SEED", random.randrange(2**32)))
    iterations = int(os.environ.get("REPLICATOR_KILL_ITERATIONS", "3"))
    print(f"seed {seed} (REPLICATOR_KILL_SEED={seed} replays it), {iterations} kills")
    rng = random.Random(seed)
    cfg = write_config(tmp_path)
    # The load deletes keys of a tree of a few keys: one deleted while the
    # daemon is dead is tombstoned by its start-up reconcile, which the
    # deletion guard (meant for a source that vanished) refused as 1 of 7
    # keys > 10%, so the final tree was never reached. The guard has its
    # own tests; here every delete is the source's.
    text = cfg.read_text()
    cfg.write_text(text.replace("[store]\n", "[store]\nmax_delete_fraction = 1.0\n", 1))
    src = tmp_path / "src"
    written = Written()
    logs, ops = [], 0
    for i in range(iterations):
        logs.append(tmp_path / f"daemon-{i}.log")
        daemon = Daemon(cfg, logs[-1])
        daemon.wait_ready()
        ops += _load_then_kill(daemon, src, written, rng)
    logs.append(tmp_path / "daemon-final.log")
    daemon = Daemon(cfg, logs[-1])
    daemon.wait_ready()
    final = source_state(src)
    for peer in PEERS:

        def there(p: str = peer) -> bool:
            return peer_state(tmp_path / p) == final

        wait_until(there, f"final tree at {peer} (seed {seed})", daemon)
    assert daemon.stop() == 0, daemon.log_tail()

    checked = sum(_check_durable(tmp_path, peer, written, logs, seed) for peer in PEERS)
    print(
        f"seed {seed}: {iterations} kills during {ops} changes; {checked} logged-durable "
        f"versions restored byte-for-byte; final tree ({len(final)} keys) at both peers"
    )


def _check_durable(tmp: Path, peer: str, written: Written, logs: list[Path], seed: int) -> int:
    manifests = peer_manifests(tmp / peer)
    index = {(k, m.identity.event_time_ns): m for k, ms in manifests.items() for m in ms}
    backend = FsBackend(tmp / peer, peer)
    checked = 0
    for log in logs:
        for d in log_events(log, "durable"):
            if d["destination"] != peer or d["kind"] != "created":
                continue
            m = index.get((d["key"], d["event_time_ns"]))
            assert m is not None, f"seed {seed}: logged durable, missing at {peer}: {d}"
            data = asyncio.run(rebuild(backend, m))
            assert data == written.bytes_of(d["key"], d["event_time_ns"]), f"seed {seed}: {d}"
            checked += 1
    return checked
