"""Progress on stderr, shared by the commands: a rich bar on a terminal,
else one JSON line at most every few seconds (logs, CI).

Two shapes: :func:`progress_display` for the commands that read a peer
(restore, verify, drill: bytes and objects done), :func:`backfill_progress`
for backfill (objects listed, then each one's outcome). rich is imported
only for a terminal: it costs 0.1-0.4 s of start-up.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from replicator.commands.output import echo

if TYPE_CHECKING:
    from replicator.pipeline.summary import Progress as BackfillProgress
    from replicator.restore import Progress

#: Seconds between structured progress lines when not on a terminal.
LOG_EVERY = 5.0


class _BarProgress:
    """A rich progress bar on the terminal (stderr)."""

    def __init__(self, bar: Any, label: str) -> None:
        self.bar = bar
        self.bytes = bar.add_task(label, total=0)
        self.objects = self.total = 0

    def add_total(self, nbytes: int) -> None:
        self.total += nbytes
        self.bar.update(self.bytes, total=self.total)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.bytes, nbytes)

    def object_done(self, key: str) -> None:
        self.objects += 1
        self.bar.update(self.bytes, description=f"{self.objects} objects")


class _LogProgress:
    """One JSON line on stderr at most every ``every`` seconds (logs, CI)."""

    def __init__(self, event: str, every: float = LOG_EVERY) -> None:
        self.event = event
        self.every = every
        self.objects = self.bytes = self.total = 0
        self.last = time.monotonic()

    def add_total(self, nbytes: int) -> None:
        self.total += nbytes

    def advance(self, nbytes: int) -> None:
        self.bytes += nbytes

    def object_done(self, key: str) -> None:
        self.objects += 1
        if time.monotonic() - self.last >= self.every:
            self.emit()

    def emit(self) -> None:
        self.last = time.monotonic()
        line = {"event": self.event, "objects": self.objects, "bytes": self.bytes}
        echo(json.dumps(line | {"total_bytes": self.total}), err=True)


@contextlib.contextmanager
def progress_display(event: str) -> Iterator[Progress]:
    """A bar on a terminal, structured progress lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import (  # noqa: PLC0415 - a terminal only
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichBar  # noqa: PLC0415

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
        )
        with RichBar(*columns, transient=True) as bar:
            yield _BarProgress(bar, event)
        return
    log = _LogProgress(event)
    yield log
    log.emit()


class _BackfillBar:
    """A rich progress bar on the terminal (stderr): bytes, and objects done."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, TextColumn  # noqa: PLC0415
        from rich.progress import Progress as RichProgress  # noqa: PLC0415

        self._rich = RichProgress(
            TextColumn("backfill"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[objects]} objects"),
            transient=True,
        )
        self._task = self._rich.add_task("backfill", total=0, objects="0/0")
        self._listed = self._done = self._total = 0

    def listed(self, objects: int, size: int) -> None:
        self._listed += objects
        self._total += size
        self._refresh(0)

    def done(self, outcome: str, size: int) -> None:
        self._done += 1
        self._refresh(size)

    def _refresh(self, advance: int) -> None:
        objects = f"{self._done}/{self._listed}"
        self._rich.update(self._task, total=self._total, advance=advance, objects=objects)

    def __enter__(self) -> _BackfillBar:
        self._rich.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._rich.stop()


class _BackfillLines:
    """One JSON progress line on stderr at most every few seconds (logs, CI)."""

    def __init__(self) -> None:
        self.listed_objects = 0
        self.listed_bytes = 0
        self.counts: dict[str, int] = {}
        self._last = time.monotonic()

    def listed(self, objects: int, size: int) -> None:
        self.listed_objects += objects
        self.listed_bytes += size

    def done(self, outcome: str, size: int) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if time.monotonic() - self._last >= LOG_EVERY:
            self._last = time.monotonic()
            line = {"event": "backfill.progress", "listed": self.listed_objects, **self.counts}
            echo(json.dumps(line), err=True)

    def __enter__(self) -> _BackfillLines:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


@contextlib.contextmanager
def backfill_progress(as_json: bool) -> Iterator[BackfillProgress]:
    """A bar on a terminal (unless the summary is JSON), lines otherwise."""
    with _BackfillBar() if sys.stderr.isatty() and not as_json else _BackfillLines() as bar:
        yield bar
