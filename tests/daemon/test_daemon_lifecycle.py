"""The daemon's lifecycle as an operator meets it: systemd's notify socket,
start-up after downtime, and configurations or peers that cannot work
(exit 2, one line naming the key)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from pathlib import Path

from replicator._native import ChunkerParams
from replicator.store.format import StoreConfig
from tests.daemon.harness import (
    PEERS,
    Daemon,
    log_events,
    peer_manifests,
    peer_state,
    replicator,
    source_state,
    wait_until,
    write_config,
)
from tests.services.process import free_port


class _NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self) -> list[str]:
        return [f for _, m in self.messages for f in m.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_systemd_notify_ready_watchdog_stopping_in_order(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    systemd = _NotifySocket(tmp_path / "notify.sock")
    try:
        env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
        daemon = Daemon(cfg, tmp_path / "daemon.log", env=env)
        wait_until(lambda: systemd.fields().count("WATCHDOG=1") >= 3, "watchdog pings", daemon)

        def rpo_status() -> bool:
            return any(f.startswith("STATUS=a: RPO") for f in systemd.fields())

        wait_until(rpo_status, "a STATUS= line with each peer's RPO (every 10 s)", daemon)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log_tail()
        wait_until(lambda: "STOPPING=1" in systemd.fields(), "STOPPING=1")
    finally:
        systemd.close()
    fields = systemd.fields()
    kinds = [f for f in fields if f in ("READY=1", "WATCHDOG=1", "STOPPING=1")]
    assert kinds[0] == "READY=1" and kinds[-1] == "STOPPING=1", kinds
    assert kinds.count("READY=1") == 1 and kinds.count("STOPPING=1") == 1
    assert kinds[1] == "WATCHDOG=1"
    assert any(f.startswith("STATUS=") for f in fields)
    pings = [t for t, m in systemd.messages if m == "WATCHDOG=1"]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(pings)]
    status = next(f for f in fields if f.startswith("STATUS=a: RPO"))
    print(f"{len(systemd.messages)} datagrams: {kinds[:3]}...{kinds[-2:]}; {status}")
    print(f"watchdog intervals {gaps[:5]}... s (0.2 s asked)")


def test_changes_made_while_down_reach_every_peer(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    src = tmp_path / "src"
    for name in ("keep.bin", "edit.bin", "gone.bin", "old-name.bin"):
        (src / name).write_bytes(os.urandom(50_000))
    daemon = Daemon(cfg, tmp_path / "daemon-1.log")
    daemon.wait_ready()  # the start-up reconcile replicates what was already there
    for peer in PEERS:
        wait_until(lambda p=peer: peer_state(tmp_path / p) == source_state(src), "first run")  # type: ignore[misc]
    assert daemon.stop() == 0

    # While the daemon is down: an edit of the same size, a new file, a
    # removal, and a rename (a removal plus a new key).
    (src / "edit.bin").write_bytes(os.urandom(50_000))
    (src / "new" / "dir").mkdir(parents=True)
    (src / "new/dir/fresh.bin").write_bytes(os.urandom(30_000))
    (src / "gone.bin").unlink()
    (src / "old-name.bin").rename(src / "new-name.bin")

    daemon = Daemon(cfg, tmp_path / "daemon-2.log")
    daemon.wait_ready()
    final = source_state(src)
    for peer in PEERS:
        wait_until(lambda p=peer: peer_state(tmp_path / p) == final, "after downtime")  # type: ignore[misc]
        manifests = peer_manifests(tmp_path / peer)
        assert manifests["gone.bin"][-1].removed and manifests["old-name.bin"][-1].removed
    assert daemon.stop() == 0
    reconciled = log_events(tmp_path / "daemon-2.log", "reconciled")
    print(f"start-up reconcile after downtime: {reconciled[0]}")


# ---------------------------------------------------------------- bad configs


def _fails_naming(done: object, *words: str) -> str:
    import subprocess  # noqa: PLC0415

    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    err: str = done.stderr.strip()
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_check_config_accepts_a_good_configuration(tmp_path: Path) -> None:
    done = replicator("check-config", "--config", str(write_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "configuration ok" in done.stdout


def test_bad_configurations_exit_2_naming_the_key(tmp_path: Path) -> None:
    # ``extra`` lands in the [service] table.
    cases = {"unknown-key": ("bogus = 1", "service.bogus"),
             "bad-value": ("max_in_flight = 0", "service.max_in_flight")}  # fmt: skip
    for name, (extra, key) in cases.items():
        (tmp_path / name).mkdir()
        cfg = write_config(tmp_path / name, extra=extra)
        for command in ("check-config", "run"):
            err = _fails_naming(replicator(command, "--config", str(cfg)), key)
            print(f"{command} with {name}: {err}")


def test_unusable_paths_and_peers_exit_2_naming_them(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    text = cfg.read_text()
    (tmp_path / "a-file").write_text("not a directory")
    broken = {
        "source.path": text.replace(f'path = "{tmp_path / "src"}"', 'path = "/nonexistent/src"'),
        "destinations[1].path": text.replace(
            f'path = "{tmp_path / "b"}"', f'path = "{tmp_path / "a-file" / "b"}"'
        ),
    }
    for key, body in broken.items():
        cfg.write_text(body)
        for command in ("check-config", "run"):
            print(_fails_naming(replicator(command, "--config", str(cfg)), key))
    # A peer that answers but holds a store written with other chunker parameters.
    cfg.write_text(text)
    (tmp_path / "b").mkdir()
    other = StoreConfig(ChunkerParams(2048, 8192, 32768, 1, 0))
    (tmp_path / "b" / "config").write_bytes(other.to_bytes())
    print(_fails_naming(replicator("check-config", "--config", str(cfg)), "destinations[1]", "'b'"))
    print(_fails_naming(replicator("run", "--config", str(cfg)), "start-up check failed", "'b'"))


def test_unreachable_s3_peer_exits_2_naming_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = write_config(
        tmp_path,
        extra=f"""
[[destinations]]
name = "s3-down"
type = "s3"
bucket = "replica"
endpoint_url = "http://127.0.0.1:{port}"
""",
    )
    # [[destinations]] after [service] is still the destinations array.
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    print(_fails_naming(replicator("check-config", "--config", str(cfg), env=env), "s3-down"))
    print(_fails_naming(replicator("run", "--config", str(cfg), env=env), "s3-down"))


def test_metrics_address_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = write_config(tmp_path, port=busy.getsockname()[1])
        print(_fails_naming(replicator("run", "--config", str(cfg)), "service.metrics_address"))


def test_a_directory_moved_out_of_the_tree_is_reconciled(tmp_path: Path) -> None:
    """inotify reports only the directory: its files leave without an event
    each. The watcher reports a gap and the daemon reconciles the tree."""
    cfg = write_config(tmp_path)
    src = tmp_path / "src"
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    daemon.wait_ready()
    (src / "run-1").mkdir()
    for i in range(3):
        (src / "run-1" / f"step-{i}.bin").write_bytes(os.urandom(20_000))
    (src / "keep.bin").write_bytes(os.urandom(1000))
    for peer in PEERS:
        wait_until(lambda p=peer: peer_state(tmp_path / p) == source_state(src), "written")  # type: ignore[misc]
    os.rename(src / "run-1", tmp_path / "archived-run-1")
    for peer in PEERS:
        wait_until(lambda p=peer: peer_state(tmp_path / p) == source_state(src), "moved out")  # type: ignore[misc]
    assert daemon.stop() == 0
    gaps = [r for r in log_events(tmp_path / "daemon.log", "reconciled") if r["reason"] == "gap"]
    assert gaps, "no reconcile after the gap"
    print(f"directory moved out: 3 tombstones per peer via a reconcile: {gaps[0]}")
