"""``replicator backfill``: replicate the current state of the source."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from types import TracebackType

import click

from replicator import config
from replicator.commands.output import echo_json
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.summary import BackfillSummary, Progress

#: Seconds between structured progress lines when not on a terminal.
_LOG_EVERY = 5.0


class _Bar:
    """A rich progress bar on the terminal (stderr): bytes, and objects done."""

    def __init__(self) -> None:
        # Loaded only for a terminal: rich costs ~0.1-0.4 s of start-up.
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

    def __enter__(self) -> _Bar:
        self._rich.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._rich.stop()


class _Lines:
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
        if time.monotonic() - self._last >= _LOG_EVERY:
            self._last = time.monotonic()
            line = {"event": "backfill.progress", "listed": self.listed_objects, **self.counts}
            click.echo(json.dumps(line), err=True)

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


def _human(s: BackfillSummary) -> str:
    lines = [
        f"objects {s.objects}: {s.replicated} replicated, {s.unchanged} unchanged, "
        f"{s.superseded} superseded, {s.errors} errors; {s.removed} tombstones"
        + "".join(f", {n} refused at {p!r}" for p, n in s.refused_removals.items()),
        f"read {s.source_bytes} bytes from the source in {s.elapsed_seconds:.1f} s",
    ]
    for name in s.shipped_bytes:
        lines.append(
            f"  {name}: shipped {s.shipped_bytes[name]} bytes, deduplicated "
            f"{s.deduplicated_bytes[name]}, {s.packs[name]} packs, "
            f"{s.manifests[name]} manifests, {s.put_requests[name]} PUTs"
        )
    lines += [
        f"  {name}: DOWN ({why}); {s.not_sent.get(name, 0)} objects not sent to it"
        for name, why in s.down.items()
    ]
    lines += [f"  error: {e}" for e in s.error_samples]
    return "\n".join(lines)


@click.command()
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None, help="Config file."
)
@click.option("--prefix", default="", help="Only keys starting with this prefix.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--allow-deletes",
    is_flag=True,
    help="Tombstone removed keys even past store.max_delete_fraction or when the source is empty.",
)
def backfill(config_path: Path | None, prefix: str, as_json: bool, allow_deletes: bool) -> None:
    """Replicate the current state of every source object to every peer.

    Peers receive only the chunks they lack; keys they hold that the source
    no longer has get a tombstone, unless that would be more than
    store.max_delete_fraction of a peer's live keys (or any key while the
    source lists nothing): then no tombstone is written and the exit code
    is 1. Re-running on unchanged data writes nothing. Exit code 1 when some
    object failed; 2 when the source root or bucket is missing or unreadable."""
    settings = config.load(config_path)
    bar = _Bar() if sys.stderr.isatty() and not as_json else _Lines()
    progress: Progress = bar
    with bar:
        summary = asyncio.run(run_backfill(settings, prefix, progress, allow_deletes=allow_deletes))
    if as_json:
        echo_json(summary.to_json())
    else:
        click.echo(_human(summary))
    if summary.errors:
        sys.exit(1)
