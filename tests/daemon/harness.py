"""`replicator run` as a real child process, and what its tests check it with.

The daemon is started as a subprocess on a temporary tree with two
directory peers; tests talk to it the way an operator does (files, signals,
its HTTP endpoint, its JSON log lines) and read the peers back with the
store's own reader plus the independent structure check of the backfill
tests. Waits are hang guards (a broken daemon must fail, not block CI),
never performance thresholds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from replicator._native import blake3_digest
from replicator.store.backends import FsBackend
from replicator.store.format import Manifest
from tests.integration.test_backfill import check_structure, manifests_at
from tests.services.process import free_port

MAIN = "from replicator.cli import main; main()"
#: Hang guard for waits on the daemon (start-up, replication of a small tree).
GUARD_S = 120.0
PEERS = ("a", "b")


def write_config(tmp: Path, *, port: int | None = None, extra: str = "") -> Path:
    """Two directory peers; small chunks and packs so tests ship several."""
    cfg = tmp / "replicator.toml"
    source = f"""
[source]
type = "fs"
path = "{tmp / "src"}"
settle_seconds = 0.5
"""
    cfg.write_text(source + peers_and_service(tmp, tmp, port=port, extra=extra))
    (tmp / "src").mkdir(exist_ok=True)
    return cfg


def peers_and_service(
    tmp: Path,
    peers: Path,
    *,
    port: int | None = None,
    b_target: float | None = None,
    extra: str = "",
) -> str:
    """The config every daemon test shares after its source: directory peers
    a (RPO target 60 s) and b under ``peers``, chunks and packs small enough
    that tests ship several, a free metrics port, ``extra`` in [service]."""
    b_line = "" if b_target is None else f"rpo_target_seconds = {b_target:g}"
    return f"""
[[destinations]]
name = "a"
type = "fs"
path = "{peers / "a"}"
rpo_target_seconds = 60

[[destinations]]
name = "b"
type = "fs"
path = "{peers / "b"}"
{b_line}

[chunking]
min_size = 4096
avg_size = 16384
max_size = 65536

[store]
pack_size = 1048576
cache_dir = "{tmp / "cache"}"
max_pack_delay = 0.2

[service]
metrics_address = "127.0.0.1:{port or free_port()}"
drain_timeout_seconds = 20
{extra}
"""


def replicator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=300,  # hang guard
    )


class Daemon:
    """One `replicator run` process; its stderr (JSON log lines) goes to a file.

    Every one started is listed in ``Daemon.started``: the autouse fixture in
    tests/daemon/conftest.py kills whatever a failed test left running, so a
    failure never leaks a process (and a ResourceWarning) into the next test."""

    started: ClassVar[list[Daemon]] = []

    def __init__(self, cfg: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.log_path = log
        self._log = log.open("ab")
        text = cfg.read_text()
        self.port = int(text.split('metrics_address = "127.0.0.1:')[1].split('"')[0])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "run", "--config", str(cfg)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        Daemon.started.append(self)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                self._log.close()
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.get("/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready, "daemon ready", self)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = GUARD_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.wait()

    @classmethod
    def reap(cls) -> int:
        """Kill every daemon still running; how many there were."""
        alive = [d for d in cls.started if d.proc.poll() is None]
        for d in alive:
            d.kill()
        for d in cls.started:
            d._log.close()
        cls.started.clear()
        return len(alive)


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines with this ``event`` (a torn last line is skipped)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            out.append(rec)
    return out


def wait_until(ok: Callable[[], bool], what: str, daemon: Daemon | None = None) -> float:
    """Poll ``ok``; the seconds it took. Fails after the hang guard."""
    started = time.monotonic()
    while time.monotonic() - started < GUARD_S:
        if ok():
            return time.monotonic() - started
        time.sleep(0.1)
    tail = daemon.log_tail() if daemon is not None else ""
    raise AssertionError(f"{what}: not reached after {GUARD_S:.0f} s\n{tail}")


def peer_state(root: Path) -> dict[str, bytes]:
    """Newest live bytes per key at a peer; asserts no manifest names a missing chunk."""
    if not (root / "config").exists():
        return {}
    return asyncio.run(check_structure(FsBackend(root, root.name)))


def peer_manifests(root: Path) -> dict[str, list[Manifest]]:
    return asyncio.run(manifests_at(FsBackend(root, root.name)))


def source_state(src: Path) -> dict[str, bytes]:
    """What the source tree holds now (ignored names excluded: none used here)."""
    out = {}
    for path in src.rglob("*"):
        if path.is_file():
            out[path.relative_to(src).as_posix()] = path.read_bytes()
    return out


@dataclass
class Written:
    """Every version a test wrote: key -> ctime ns -> bytes."""

    versions: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def write(self, src: Path, key: str, data: bytes, *, via_temp: bool = False) -> int:
        path = src / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if via_temp:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            path.write_bytes(data)
        ctime = os.stat(path).st_ctime_ns
        self.versions.setdefault(key, {})[ctime] = data
        return ctime

    def bytes_of(self, key: str, event_time_ns: int) -> bytes:
        try:
            return self.versions[key][event_time_ns]
        except KeyError:
            raise AssertionError(
                f"{key!r} at {event_time_ns}: no such version was written"
            ) from None

    def check_manifest(self, m: Manifest) -> bytes:
        """A manifest names a version that was written, with its digest."""
        data = self.bytes_of(m.identity.key, m.identity.event_time_ns)
        assert blake3_digest(data) == m.digest, (
            f"{m.identity.key!r} at {m.identity.event_time_ns}: digest differs from the "
            f"version written then ({data[:16]!r}...); versions at: "
            f"{sorted(self.versions[m.identity.key])[-3:]}"
        )
        return data


def at_arg(event_time_ns: int) -> str:
    """``restore --at`` for exactly this event time (epoch seconds, exact)."""
    return f"{event_time_ns // 10**9}.{event_time_ns % 10**9:09d}"
