"""Jobs that ``./dev test`` runs in the background while the suite runs.

The slowest part of a cold set-up is SeaweedFS's Go build (docs/testing.md),
so ``./dev test`` starts it at idle priority before anything else and the
tests that need it run last (tests/conftest.py). ``$REPLICATOR_BACKGROUND``
names the directory where each job ``NAME`` has ``NAME.pid`` (its process
group), ``NAME.log``, ``NAME.started`` and, once it has ended, ``NAME.status``
(its exit code, written atomically). Without the variable (a plain
``pytest`` run) nothing is pending and :func:`wait_for` returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.services.process import ServiceError

ENV = "REPLICATOR_BACKGROUND"
#: Bound on waiting for a job, so a hung build fails the session instead of
#: hanging CI; a cold SeaweedFS build at idle priority takes 10-30 minutes.
WAIT_LIMIT_S = 3600.0


def _job(name: str) -> Path | None:
    where = os.environ.get(ENV)
    if not where or not (Path(where) / f"{name}.pid").is_file():
        return None
    return Path(where) / name


def pending(name: str) -> bool:
    """True while ./dev's job ``name`` is still running."""
    job = _job(name)
    return job is not None and not job.with_suffix(".status").exists() and _alive(job)


def log_path(name: str) -> Path | None:
    job = _job(name)
    return None if job is None else job.with_suffix(".log")


def _alive(job: Path) -> bool:
    try:
        os.kill(int(job.with_suffix(".pid").read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def wait_for(name: str, what: str, limit_s: float = WAIT_LIMIT_S) -> float:
    """Wait until job ``name`` has ended; seconds waited. ServiceError (with
    the tail of its log) if it failed, died without a status or timed out."""
    job = _job(name)
    if job is None:
        return 0.0
    status = job.with_suffix(".status")
    began = time.monotonic()
    while not status.exists():
        if not _alive(job) and not status.exists():
            raise ServiceError(f"{what} died without an exit status; log {job}.log:\n{_tail(job)}")
        if time.monotonic() - began > limit_s:
            raise ServiceError(f"{what} still running after {limit_s:.0f} s; log {job}.log")
        time.sleep(1.0)
    code = status.read_text().strip()
    if code != "0":
        raise ServiceError(f"{what} failed (exit {code}); log {job}.log:\n{_tail(job)}")
    return time.monotonic() - began


def _tail(job: Path, lines: int = 30) -> str:
    try:
        text = job.with_suffix(".log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
