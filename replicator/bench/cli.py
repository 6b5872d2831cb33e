"""``replicator bench`` group."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measured throughput and wire efficiency, as ratios within one run."""
