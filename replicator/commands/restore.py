"""``replicator restore``: rebuild object versions from a peer into a directory.

Exit codes: 0 every selected object restored and verified; 1 any object
failed (digest mismatch, missing pack, unsafe key, nothing found); 2 usage
or configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from replicator import config
from replicator.commands.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    config_option,
    exit_codes,
    json_option,
    load_settings,
    open_for_reading,
    parallel_option,
)
from replicator.commands.output import echo_json
from replicator.commands.progress import progress_display
from replicator.errors import ConfigError
from replicator.restore import Progress, RestoreSummary, Selection, parse_time, restore
from replicator.store.reader import Problem


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
@config_option
@click.option("--destination", required=True, help="Peer to restore from.")
@click.option("--key", help="Restore exactly this key.")
@click.option("--prefix", help="Restore every key starting with this prefix ('' = all).")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--at", "at", help="Versions as of this time: ISO-8601 (UTC if no zone) or epoch s.")
@parallel_option
@json_option("Print a JSON summary on stdout.")
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
        with progress_display("restore.progress") as progress, segments_named_here():
            summary = asyncio.run(
                _run(settings, destination, selection, to, parallel=parallel, progress=progress)
            )
    _report(summary, destination, selection, as_json)
    sys.exit(EXIT_OK if summary.ok else EXIT_PROBLEM)


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


@contextlib.contextmanager
def segments_named_here() -> Iterator[None]:
    """While a command that names every damaged segment in its own report
    runs, the reconcile's warning about each is held back: one line per
    problem, not two."""

    def quiet(record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING

    logger = logging.getLogger("replicator.store.segment_sync")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def described(p: Problem, *, chunk_fields: bool = False) -> str:
    """``key=… version=… [pack=… chunk=…]: message``; a problem of no
    version (a damaged segment, nothing to drill) is its message alone.
    ``chunk_fields``: pack and chunk shown even when empty (verify's lines)."""
    if not (p.key or p.version or p.pack):
        return p.message
    what = f"key={p.key!r}" + (f" version={p.version}" if p.version or chunk_fields else "")
    if p.pack or chunk_fields:
        what += f" pack={p.pack} chunk={p.chunk}"
    return f"{what}: {p.message}"


def _report(summary: RestoreSummary, destination: str, sel: Selection, as_json: bool) -> None:
    if as_json:
        echo_json({"destination": destination, "bucket": sel.bucket} | summary.to_json())
        return
    for p in summary.errors:
        click.echo(f"error: {described(p)}", err=True)
    for k in summary.removed:
        click.echo(f"removed (tombstone, nothing restored): {k!r}")
    click.echo(
        f"restored {summary.objects} objects, {summary.bytes} bytes from {destination!r} in "
        f"{summary.elapsed_seconds:.3f}s; {len(summary.removed)} removed, "
        f"{summary.not_yet_created} not yet created, {len(summary.errors)} errors"
    )
