"""Running ``replicator`` as operators do: a real process, its exit code, its
stderr, and the rule of issue 7 that nothing they cause ends in a traceback.

``readonly`` paths are made read-only for that one process: a read-only bind
mount in a private mount namespace when running as root (root ignores file
modes), ``chmod a-w`` otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The prefix every operator-facing error line starts with.
ERROR = "error: "


@dataclass
class Ran:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    @property
    def last_error(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith(ERROR)]
        return lines[-1] if lines else ""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _root() -> bool:
    return os.geteuid() == 0


def _wrap(cmd: list[str], readonly: Sequence[Path]) -> list[str]:
    if not readonly or not _root():
        return cmd
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare(1): cannot make a read-only mount")
    mounts = " && ".join(f'mount --bind -r "{p}" "{p}"' for p in readonly)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *cmd]


def replicator(
    *args: str | Path,
    readonly: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Ran:
    """``python -m replicator ARGS`` in a fresh process."""
    cmd = [sys.executable, "-m", "replicator", *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("REPLICATOR_DEBUG", None)
    if not _root():
        for p in readonly:
            p.chmod(0o555)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            _wrap(cmd, readonly), capture_output=True, env=full_env, timeout=timeout, check=False
        )
    finally:
        if not _root():
            for p in readonly:
                p.chmod(0o755)
    ran = Ran(cmd, proc.returncode, _decode(proc.stdout), _decode(proc.stderr))
    ran.seconds = time.monotonic() - started
    assert "Traceback" not in ran.stdout + ran.stderr, ran.stderr
    return ran


def refused(ran: Ran, code: int, *words: str) -> str:
    """The run failed with ``code`` and one error line naming ``words``."""
    line = ran.last_error
    assert ran.code == code, (ran.code, ran.stderr)
    assert line, ran.stderr
    for word in words:
        assert word in line, (word, line)
    print(f"exit {ran.code}: {line}")
    return line


def fs_config(
    tmp: Path,
    *,
    source: Path | None = None,
    peers: Sequence[tuple[str, Path]] | None = None,
    cache_dir: Path | None = None,
    extra: str = "",
) -> Path:
    """A config with an fs source and fs peers (default: src, peers a and b)."""
    source = source or tmp / "src"
    peers = peers if peers is not None else [("a", tmp / "a"), ("b", tmp / "b")]
    text = f'[source]\ntype = "fs"\npath = "{source}"\n\n'
    for name, path in peers:
        text += f'[[destinations]]\nname = "{name}"\ntype = "fs"\npath = "{path}"\n\n'
    text += "[store]\n"
    if cache_dir is not None:
        text += f'cache_dir = "{cache_dir}"\n'
    cfg = tmp / "replicator.toml"
    cfg.write_text(text + extra)
    return cfg
