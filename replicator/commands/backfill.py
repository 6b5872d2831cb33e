"""``replicator backfill``: replicate the current state of the source."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from replicator.commands.common import EXIT_PROBLEM, config_option, json_option, load_settings
from replicator.commands.output import echo_json
from replicator.commands.progress import backfill_progress
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.summary import BackfillSummary


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
            + (f", {s.caught_up[name]} read again alone (behind)" if name in s.caught_up else "")
        )
    lines += [
        f"  {name}: DOWN ({why}); {s.not_sent.get(name, 0)} objects not sent to it"
        for name, why in s.down.items()
    ]
    lines += [f"  error: {e}" for e in s.error_samples]
    return "\n".join(lines)


@click.command()
@config_option
@click.option("--prefix", default="", help="Only keys starting with this prefix.")
@json_option("Print the summary as JSON.")
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
    settings = load_settings(config_path)
    with backfill_progress(as_json) as progress:
        summary = asyncio.run(run_backfill(settings, prefix, progress, allow_deletes=allow_deletes))
    if as_json:
        echo_json(summary.to_json())
    else:
        click.echo(_human(summary))
    if summary.errors:
        sys.exit(EXIT_PROBLEM)
