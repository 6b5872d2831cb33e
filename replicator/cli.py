"""The ``replicator`` command line (click). Exit codes: 0 ok, 1 a problem was
found (verify/restore), 2 usage or configuration error.

Each command lives in its own module; this file only assembles the group."""

from __future__ import annotations

import sys

import click

from replicator import __version__
from replicator.bench.cli import bench
from replicator.commands import register
from replicator.errors import ReplicatorError
from replicator.memory import pin_mmap_threshold


class _Group(click.Group):
    """Turns a ReplicatorError into its message and exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ReplicatorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="replicator")
def main() -> None:
    """Event-driven, delta-efficient disaster recovery for AI data."""
    pin_mmap_threshold()


main.add_command(bench)
register(main)
