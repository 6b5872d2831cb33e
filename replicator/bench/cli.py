"""``replicator bench`` group."""

from __future__ import annotations

import click

from replicator.bench.chunk import chunk
from replicator.bench.compare import compare
from replicator.bench.delta import delta
from replicator.bench.e2e_cli import e2e


@click.group()
def bench() -> None:
    """Measured throughput and wire efficiency, as ratios within one run."""


bench.add_command(chunk)
bench.add_command(delta)
bench.add_command(compare)
bench.add_command(e2e)
