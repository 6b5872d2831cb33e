"""The store commands (backfill, restore, verify, ...), one module each.

Commands are loaded on demand: ``replicator backfill`` imports the backfill
module and what it needs, never the daemon, the Kafka client or the bench
harness, and ``replicator --help`` imports no command at all: its list is
written from the one-line summaries kept here (a test holds each one equal
to its command's own). Start-up cost counts on every run (measured in
docs/performance.md). Adding a command is one line in ``COMMANDS``; the
group that loads them is ``replicator.cli``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click


class Entry:
    """Where a command lives, and its summary for ``replicator --help``.

    A plain class: a NamedTuple is built with ``exec`` and typing's
    machinery, ~1-2 ms of every start-up (this package is imported by
    every command, the plain backfill included)."""

    __slots__ = ("attr", "module", "summary")

    def __init__(self, module: str, attr: str, summary: str) -> None:
        self.module = module
        self.attr = attr
        self.summary = summary

    def __repr__(self) -> str:
        return f"Entry({self.module!r}, {self.attr!r}, {self.summary!r})"


COMMANDS: dict[str, Entry] = {
    "backfill": Entry(
        "replicator.commands.backfill",
        "backfill",
        "Replicate the current state of every source object to every peer.",
    ),
    "bench": Entry(
        "replicator.bench.cli",
        "bench",
        "Measured throughput and wire efficiency, as ratios within one run.",
    ),
    "check-config": Entry(
        "replicator.commands.run",
        "check_config_command",
        "Validate the configuration, its paths and that every peer answers.",
    ),
    "demo": Entry(
        "replicator.commands.demo",
        "demo_command",
        "Run the daemon on a synthetic training job, then prove every byte.",
    ),
    "drill": Entry(
        "replicator.commands.drill",
        "drill_command",
        "Restore the latest versions (all, or a sample) into scratch space, verify every "
        "byte, and print the measured RTO.",
    ),
    "heartbeat": Entry(
        "replicator.commands.heartbeat",
        "heartbeat_command",
        "Write the heartbeat canary into the source; report its age at every peer.",
    ),
    "repair": Entry(
        "replicator.commands.repair",
        "repair_command",
        "Write good copies of damaged chunks (from the source, else another peer).",
    ),
    "restore": Entry(
        "replicator.commands.restore",
        "restore_command",
        "Restore object versions byte-for-byte into the directory --to.",
    ),
    "run": Entry(
        "replicator.commands.run",
        "run_command",
        "Run the daemon: watch the source, keep every peer current.",
    ),
    "status": Entry(
        "replicator.commands.status",
        "status_command",
        "Per peer: RPO against target, pending changes, last durable event.",
    ),
    "verify": Entry(
        "replicator.commands.verify",
        "verify_command",
        "Check that every manifest's chunks exist (and, with --deep, re-hash).",
    ),
}


def load(name: str) -> click.Command:
    import importlib  # noqa: PLC0415 - only the click group loads commands by name

    import click  # noqa: PLC0415 - a plain backfill runs without click (replicator/program.py)

    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.attr)
    assert isinstance(command, click.Command)
    return command


__all__ = ["COMMANDS", "Entry", "load"]
