"""``replicator backfill``: replicate the current state of the source."""

from __future__ import annotations

from pathlib import Path

import click

from replicator.commands.backfill_run import _human, backfill_run
from replicator.commands.common import config_option, json_option

__all__ = ["_human", "backfill"]  # _human: the summary's words, for tests


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
    backfill_run(config_path, prefix, as_json, allow_deletes)
