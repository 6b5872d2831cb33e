"""One peer down never holds back the other, and loses nothing.

The directory peer is made really unwritable: every directory of it gets
the immutable attribute (``chattr +i``; plain permissions do not stop
root). Changes keep reaching the healthy peer; the down one builds a
backlog that /status shows (pending, RPO, up=false) and catches up, with
every change, once it is writable again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon.harness import (
    Daemon,
    log_events,
    peer_state,
    source_state,
    wait_until,
    write_config,
)


def _immutable(root: Path, on: bool) -> None:
    dirs = [str(p) for p in [root, *root.rglob("*")] if p.is_dir()]
    if not dirs:
        return
    subprocess.run(["chattr", "+i" if on else "-i", *dirs], check=True, capture_output=True)


def _can_make_immutable(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    if done.returncode != 0:
        return False
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
    return False


def test_a_down_peer_holds_back_nothing_and_catches_up(tmp_path: Path) -> None:
    if not _can_make_immutable(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    cfg = write_config(tmp_path, extra="retry_max_seconds = 2")
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    daemon.wait_ready()
    _immutable(tmp_path / "b", True)
    try:
        down_since = time.monotonic()
        (src / "hot.bin").write_bytes(os.urandom(10_000))
        first_ctime = os.stat(src / "hot.bin").st_ctime_ns
        time.sleep(1.5)
        for i in range(20):
            (src / f"f{i}.bin").write_bytes(os.urandom(40_000 + i))
        # Newer versions replace the one b never got: b's copy stays older
        # than the first, so its RPO must still count from the first.
        for _ in range(3):
            (src / "hot.bin").write_bytes(os.urandom(10_000))
        tree = source_state(src)
        took_a = wait_until(lambda: peer_state(tmp_path / "a") == tree, "healthy peer a", daemon)
        time.sleep(1.5)  # b stays down a while longer
        status = daemon.status()
        a, b = status["destinations"]["a"], status["destinations"]["b"]
        true_rpo = status["time"] - first_ctime / 1e9
        assert b["rpo_seconds"] >= true_rpo - 0.5, (b["rpo_seconds"], true_rpo)
        assert a["pending_events"] == 0 and a["up"]
        # One per key, plus hot.bin's first version (pending until a newer one is durable).
        assert b["pending_events"] == len(tree) + 1 and not b["up"] and b["errors"] > 0
        assert b["rpo_seconds"] > a["rpo_seconds"]
        assert peer_state(tmp_path / "b") == {}
    finally:
        _immutable(tmp_path / "b", False)
        down_for = time.monotonic() - down_since
    took_b = wait_until(lambda: peer_state(tmp_path / "b") == tree, "peer b after recovery", daemon)
    wait_until(lambda: daemon.status()["destinations"]["b"]["rpo_seconds"] == 0, "b's RPO at 0")
    assert daemon.stop() == 0, daemon.log_tail()
    print(
        f"a had all {len(tree)} files {took_a:.2f} s after they were written while b was down; "
        f"b at {b['rpo_seconds']:.2f} s RPO (true {true_rpo:.2f} s), "
        f"{b['pending_events']} pending, {b['errors']} errors "
        f"while down ({down_for:.1f} s); caught up {took_b:.2f} s "
        f"after it came back (backoff cap 2 s)"
    )


def _ready_and_reconciled(daemon: Daemon, log: Path) -> None:
    """READY comes before the start-up reconcile (a backfill of the tree, not
    bound by ``max_pending``): a file written before it lists the tree is
    that backfill's, not the service's. Wait for it to finish."""
    daemon.wait_ready()

    def reconciled() -> bool:
        return any(r.get("reason") == "start-up" for r in log_events(log, "reconciled"))

    wait_until(reconciled, "the start-up reconcile", daemon)


def _daemon_with_backlog_at_b(tmp_path: Path, drain: float) -> Daemon:
    """A daemon whose peer b is down with changes pending for it."""
    cfg = write_config(tmp_path, extra="retry_max_seconds = 1")
    text = cfg.read_text().replace("drain_timeout_seconds = 20", f"drain_timeout_seconds = {drain}")
    cfg.write_text(text)
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    _ready_and_reconciled(daemon, tmp_path / "daemon.log")
    _immutable(tmp_path / "b", True)
    for i in range(5):
        (tmp_path / "src" / f"f{i}.bin").write_bytes(os.urandom(10_000))
    # a has them all: the service took them, and holds them for b.
    wait_until(lambda: len(peer_state(tmp_path / "a")) == 5, "all at a", daemon)
    return daemon


def test_sigterm_with_a_peer_down_exits_0_at_the_drain_bound(tmp_path: Path) -> None:
    if not _can_make_immutable(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    try:
        daemon = _daemon_with_backlog_at_b(tmp_path, drain=2)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log_tail()
        took = time.monotonic() - started
    finally:
        _immutable(tmp_path / "b", False)
    left = log_events(tmp_path / "daemon.log", "stopped with changes left for the next start")
    assert left and left[0]["left"] == 5, daemon.log_tail()
    print(f"exit 0 {took:.2f} s after SIGTERM (drain bound 2 s), 5 changes left for the next start")


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    if not _can_make_immutable(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    try:
        daemon = _daemon_with_backlog_at_b(tmp_path, drain=600)
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: bool(log_events(tmp_path / "daemon.log", "signal: draining")), "drain")
        started = time.monotonic()
        daemon.signal(signal.SIGINT)
        assert daemon.wait() == 1, daemon.log_tail()
        took = time.monotonic() - started
    finally:
        _immutable(tmp_path / "b", False)
    assert log_events(tmp_path / "daemon.log", "second signal: exiting at once")
    print(f"second signal: exit 1 after {took:.3f} s while a 600 s drain was under way")


def test_memory_stays_bounded_by_max_pending_while_a_peer_is_down(tmp_path: Path) -> None:
    """With ``service.max_pending = 3`` the service holds at most 3 changes for
    the down peer; the rest wait in the source (counted in the RPO), and
    everything arrives once the peer is back."""
    if not _can_make_immutable(tmp_path):
        pytest.skip("needs chattr +i on this filesystem (root, ext4/xfs/btrfs)")
    cfg = write_config(tmp_path, extra="retry_max_seconds = 1\nmax_pending = 3")
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    _ready_and_reconciled(daemon, tmp_path / "daemon.log")
    _immutable(tmp_path / "b", True)
    try:
        for i in range(10):
            (src / f"f{i}.bin").write_bytes(os.urandom(20_000))

        wait_until(lambda: len(peer_state(tmp_path / "a")) >= 3, "the first 3 at a", daemon)
        time.sleep(1.0)  # b keeps failing; the intake stays paused
        status = daemon.status()
        held_by_a = len(peer_state(tmp_path / "a"))
        assert held_by_a == 3  # the cap pauses the intake for every peer
        assert status["source"]["backlog_events"] == 7  # kept by the source
        assert status["destinations"]["b"]["pending_events"] == 10  # all counted for b
    finally:
        _immutable(tmp_path / "b", False)
    tree = source_state(src)
    for peer in ("a", "b"):

        def there(p: str = peer) -> bool:
            return peer_state(tmp_path / p) == tree

        wait_until(there, f"all at {peer}", daemon)
    assert daemon.stop() == 0
    print(
        f"max_pending 3: {status['source']['backlog_events']} changes waited in the source, "
        f"{held_by_a} reached a while b was down; all 10 at both peers after"
    )
