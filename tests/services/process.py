"""Starting and stopping a server process owned by a test session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Bound on a server's start-up, so a broken server fails the session
#: instead of hanging it. Not a performance threshold: servers take seconds.
STARTUP_LIMIT_S = 180.0


class ServiceError(RuntimeError):
    """A test service could not be started."""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """One child process with its log file, killed (with its group) on stop()."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stop() reaches every child
        )

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_ready(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` until it answers True; fail early if the process exits."""
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"{what} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        self.stop()
        raise ServiceError(f"{what} not ready after {STARTUP_LIMIT_S:.0f} s:\n{self.log_tail()}")

    def stop(self, *, timeout: float = 3.0, kill: bool = False) -> None:
        """SIGTERM the group and wait ``timeout`` s before SIGKILL (at once if ``kill``)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
