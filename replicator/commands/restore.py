"""``replicator restore``: rebuild object versions from a peer into a directory.

Exit codes: 0 every selected object restored and verified; 1 any object
failed (digest mismatch, missing pack, unsafe key, nothing found); 2 usage
or configuration error. Shared here: opening a destination for reading and
the progress display that verify uses too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBar

from replicator import config
from replicator.commands.output import echo_json
from replicator.errors import ConfigError, ReplicatorError
from replicator.restore import Progress, RestoreSummary, Selection, parse_time, restore
from replicator.store.backend import Backend
from replicator.store.peer import make_backend
from replicator.store.reader import read_store_config


class _BarProgress:
    """A rich progress bar on the terminal (stderr)."""

    def __init__(self, bar: RichBar, label: str) -> None:
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

    def __init__(self, event: str, every: float = 5.0) -> None:
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
        click.echo(json.dumps(line | {"total_bytes": self.total}), err=True)


@contextlib.contextmanager
def progress_display(event: str) -> Iterator[Progress]:
    """A bar on a terminal, structured progress lines otherwise."""
    if sys.stderr.isatty():
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


async def open_for_reading(settings: config.Settings, destination: str) -> Backend:
    """The destination's backend, after checking that it holds a store this
    version can read. Unlike the write path, the configured chunker need not
    match: every manifest carries the parameters it was written with."""
    backend = make_backend(settings.destination(destination))
    try:
        await read_store_config(backend)
    except BaseException:
        await backend.close()
        raise
    return backend


def load_settings(path: Path | None) -> config.Settings:
    return config.load(path)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """A ReplicatorError ends the command with its message and exit code
    (as the top-level group does), also when the command runs on its own."""
    try:
        yield
    except ReplicatorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


def prepare_target(to: Path) -> Path:
    """Create ``--to`` before any peer is contacted; one line when it cannot be."""
    try:
        to.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"--to {to}: exists and is not a directory") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(to) else ""
        raise ConfigError(f"--to {to}: cannot create the directory{where}: {why}") from exc
    return to


@click.command("restore")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--destination", required=True, help="Peer to restore from.")
@click.option("--key", help="Restore exactly this key.")
@click.option("--prefix", help="Restore every key starting with this prefix ('' = all).")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--at", "at", help="Versions as of this time: ISO-8601 (UTC if no zone) or epoch s.")
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def restore_command(
    *,
    config_path: Path | None,
    destination: str,
    key: str | None,
    prefix: str | None,
    to: Path,
    at: str | None,
    parallel: int,
    as_json: bool,
) -> None:
    """Restore object versions byte-for-byte into the directory --to."""
    if (key is None) == (prefix is None):
        raise click.UsageError("give exactly one of --key and --prefix")
    with exit_codes():
        settings = load_settings(config_path)
        at_ns = parse_time(at) if at is not None else None
        prepare_target(to)
        selection = Selection(settings.source.bucket, key or prefix or "", key is not None, at_ns)
        with progress_display("restore.progress") as progress:
            summary = asyncio.run(
                _run(settings, destination, selection, to, parallel=parallel, progress=progress)
            )
    _report(summary, destination, selection, as_json)
    sys.exit(0 if summary.ok else 1)


async def _run(
    settings: config.Settings,
    destination: str,
    selection: Selection,
    to: Path,
    *,
    parallel: int,
    progress: Progress,
) -> RestoreSummary:
    backend = await open_for_reading(settings, destination)
    try:
        return await restore(backend, selection, to, parallel=parallel, progress=progress)
    finally:
        await backend.close()


def _report(summary: RestoreSummary, destination: str, sel: Selection, as_json: bool) -> None:
    if as_json:
        echo_json({"destination": destination, "bucket": sel.bucket} | summary.to_json())
        return
    for p in summary.errors:
        where = f" pack={p.pack} chunk={p.chunk}" if p.pack else ""
        click.echo(f"error: key={p.key!r} version={p.version}{where}: {p.message}", err=True)
    for k in summary.removed:
        click.echo(f"removed (tombstone, nothing restored): {k!r}")
    click.echo(
        f"restored {summary.objects} objects, {summary.bytes} bytes from {destination!r} in "
        f"{summary.elapsed_seconds:.3f}s; {len(summary.removed)} removed, "
        f"{summary.not_yet_created} not yet created, {len(summary.errors)} errors"
    )
