"""``replicator demo``: the main job on the embedded default.

Starts the real daemon (``replicator run``) on a directory source and two
directory peers in a temporary folder, runs a synthetic training job
against it for ``--duration`` seconds with a live view of every peer's RPO,
stops the daemon with SIGTERM, restores every version of every key from
each peer and compares it with the job's own copy.

Exit codes: 0 every byte matches; 1 a mismatch, a missing version, or a
daemon that did not start, drain or stop cleanly; 2 usage error.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from replicator.commands.common import exit_codes
from replicator.commands.output import echo_json
from replicator.demo.run import DemoResult, run_demo
from replicator.demo.view import mib, summary_table
from replicator.errors import ConfigError


def _root(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="replicator-demo-"))
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise ConfigError(f"--keep: {keep} exists and is not an empty directory")
    keep.mkdir(parents=True, exist_ok=True)
    return keep


@click.command("demo")
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(3, 3600),
    help="Seconds the synthetic training job runs.",
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run in this (new or empty) directory and leave it for inspection.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def demo_command(*, duration: float, keep: Path | None, as_json: bool) -> None:
    """Run the daemon on a synthetic training job, then prove every byte."""
    live = Console(stderr=True)
    with exit_codes():
        root = _root(keep)
        try:
            result = asyncio.run(run_demo(root, duration, live))
        finally:
            if keep is None:
                shutil.rmtree(root, ignore_errors=True)
    if as_json:
        echo_json(result.to_json())
    else:
        # Off a terminal rich assumes 80 columns: too narrow for the table.
        out = Console() if sys.stdout.isatty() else Console(width=132)
        _print_summary(out, result, root if keep else None)
    sys.exit(0 if result.ok else 1)


def _print_summary(console: Console, r: DemoResult, kept: Path | None) -> None:
    console.print(
        f"training job: {r.steps} checkpoints, {r.versions_written} versions written "
        f"({mib(r.bytes_written)}), {r.removals} removals"
    )
    console.print(summary_table(r.rows))
    for problem in r.problems + [p for c in r.checks for p in c.problems]:
        console.print(f"[red]problem:[/red] {problem}")
    verdict = "every byte matches" if r.ok else "MISMATCH: see the problems above"
    console.print(f"demo finished in {r.seconds:.1f} s: {verdict}")
    if kept is not None:
        console.print(f"folders kept in {kept}: daemon.log, versions.jsonl, source/, kept/, peers")
