"""``replicator repair``: heal a peer's damaged or missing chunks, and its
damaged format 3 manifest segments (``repair_segments.py``).

Exit codes: 0 the peer deep-verifies clean afterwards (or had nothing to
repair); 1 chunks that no healthy copy holds (each named with the versions
it breaks), a damaged segment left in place (named, with what to do), or
other problems left; 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from replicator.commands.common import config_option, exit_codes, load_settings
from replicator.commands.output import echo_json
from replicator.commands.restore import described, segments_named_here
from replicator.repair import RepairReport, repair


@click.command("repair")
@config_option
@click.option("--destination", required=True, help="Peer to repair.")
@click.option(
    "--discard-damaged-segments",
    "discard",
    is_flag=True,
    help="Delete damaged manifest segments that no copy can rebuild (run backfill first: "
    "versions only they held are lost at this peer).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
def repair_command(
    *, config_path: Path | None, destination: str, discard: bool, as_json: bool
) -> None:
    """Write good copies of damaged chunks (from the source, else another peer).

    Damaged manifest segments (format 3) are rebuilt from checked copies:
    their intact entries, the peer's other segments, other peers."""
    with exit_codes():
        settings = load_settings(config_path)
        with segments_named_here():
            report = asyncio.run(repair(settings, destination, discard=discard))
    if as_json:
        echo_json(report.to_json())
    else:
        _print(report)
    sys.exit(0 if report.ok else 1)


def _print(report: RepairReport) -> None:
    for s in report.segments:
        line = f"segment {s.segment} ({s.why}): {s.done}"
        click.echo(line if s.ok else f"unrepaired: {line}", err=not s.ok)
        for key, version in s.lost:
            what = "unrepaired" if not s.ok else "lost"
            click.echo(f"{what}: key={key!r} version={version}: its manifest was only in "
                       f"segment {s.segment}", err=True)  # fmt: skip
    for d in report.unrepaired:
        versions = ", ".join(f"key={k!r} version={v}" for k, v in sorted(d.versions))
        click.echo(
            f"unrepaired: chunk={d.chunk.digest.hex()} pack={d.pack.hex()} ({d.reason}); "
            f"no healthy copy at the source or any peer; breaks {versions}",
            err=True,
        )
    for name, why in report.peer_errors.items():
        click.echo(f"peer {name!r} could not be used as a source: {why}", err=True)
    after = report.after
    named = tuple(f"segment {s.segment}" for s in report.segments)
    for p in after.problems if after else []:
        if not p.key and named and p.message.startswith(named):
            continue  # the segment's own line above says it
        click.echo(f"problem left: {described(p, chunk_fields=True)}", err=True)
    peers = ", ".join(f"{n}: {c}" for n, c in report.from_peers.items()) or "none asked"
    state = "verifies clean" if report.ok else "still damaged"
    click.echo(
        f"repair of {report.destination!r}: {_segments(report)}"
        f"{report.damaged} damaged chunk copies, "
        f"{report.from_source} healed from the source, from peers {peers}; "
        f"{len(report.unrepaired)} unrepaired; deep verify afterwards: {state}"
    )


def _segments(report: RepairReport) -> str:
    if not report.segments:
        return ""
    fixed = sum(s.ok for s in report.segments)
    return f"{len(report.segments)} damaged segments ({fixed} repaired), "
