"""The real daemon as a child process: ``replicator run --config FILE``.

The demo and ``bench e2e`` drive the same code an operator runs, through
the same doors: a configuration file, the HTTP endpoint (/readyz, /status,
/metrics), the JSON log (one ``durable`` line per version made durable at a
peer) and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from replicator.errors import ReplicatorError

CLI = "from replicator.cli import main; main()"
PEERS = ("peer-a", "peer-b")


class DemoError(ReplicatorError):
    """The demo (or bench) could not run the daemon as it should."""

    exit_code = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(root: Path, *, port: int, rpo_target: float = 10.0) -> Path:
    """The embedded default: a directory source and two directory peers."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    peers = "".join(
        f'\n[[destinations]]\nname = "{name}"\ntype = "fs"\npath = {q(str(root / name))}\n'
        f"rpo_target_seconds = {rpo_target}\n"
        for name in PEERS
    )
    text = f"""# Written by replicator demo: the embedded default.
[source]
type = "fs"
path = {q(str(root / "source"))}
bucket = "demo"
{peers}
[store]
pack_size = 4194304
cache_dir = {q(str(root / "cache"))}
max_pack_delay = 0.5

[service]
metrics_address = "127.0.0.1:{port}"
drain_timeout_seconds = 20
"""
    (root / "source").mkdir(parents=True, exist_ok=True)
    path = root / "replicator.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class Durable:
    """One ``durable`` log line: a version made durable at a peer."""

    destination: str
    key: str
    event_time_ns: int
    latency_seconds: float
    shipped_bytes: int
    deduplicated_bytes: int

    @property
    def durable_ns(self) -> int:
        return self.event_time_ns + int(self.latency_seconds * 1e9)


class DaemonProcess:
    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config = config
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, within: float = 60.0) -> None:
        """Spawn ``replicator run`` and wait until /readyz answers 200."""
        with _append(self.log) as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLI,
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                # Its own session: a Ctrl-C meant for the demo does not reach
                # it; the demo stops it with SIGTERM, as an operator would.
                start_new_session=True,
            )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise DemoError(
                    f"the daemon exited with code {self.proc.returncode} at start-up:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._session.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise DemoError(f"the daemon was not ready after {within:g} s:\n" + self.log_tail())

    async def get(self, path: str) -> str | None:
        """The body of GET ``path``, or None when the daemon does not answer."""
        if self._session is None:
            return None
        try:
            async with self._session.get(self.url + path) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def status(self) -> dict[str, Any] | None:
        body = await self.get("/status")
        return None if body is None else dict(json.loads(body))

    async def wait_settled(self, within: float) -> bool:
        """Until nothing is pending at any peer (True), or ``within`` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status = await self.status()
            if status is not None and all(
                p["pending_events"] == 0 for p in status["destinations"].values()
            ):
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and DemoError past ``within`` s)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return -1 if proc is None else proc.returncode or 0
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DemoError(f"the daemon did not stop within {within:g} s of SIGTERM") from None

    def durable(self) -> list[Durable]:
        return list(parse_durable(self.log))

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _append(path: Path) -> BinaryIO:
    return open(path, "ab")  # the caller closes it (a with block)


def parse_durable(log: Path) -> Iterator[Durable]:
    """The ``durable`` events of a daemon's JSON log (other lines skipped)."""
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if '"durable"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") != "durable":
                continue
            yield Durable(
                rec["destination"],
                rec["key"],
                int(rec["event_time_ns"]),
                float(rec["latency_seconds"]),
                int(rec["shipped_bytes"]),
                int(rec["deduplicated_bytes"]),
            )
