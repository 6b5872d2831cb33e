"""The store commands (backfill, restore, verify, ...), one module each.

Commands are loaded on demand: ``replicator backfill`` imports the backfill
module and what it needs, never the daemon, the Kafka client or the bench
harness (start-up cost counts on every run; measured in
docs/performance.md). Adding a command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib

import click

#: command name -> (module, attribute) of its click command.
COMMANDS: dict[str, tuple[str, str]] = {
    "backfill": ("replicator.commands.backfill", "backfill"),
    "bench": ("replicator.bench.cli", "bench"),
    "check-config": ("replicator.commands.run", "check_config_command"),
    "demo": ("replicator.commands.demo", "demo_command"),
    "drill": ("replicator.commands.drill", "drill_command"),
    "heartbeat": ("replicator.commands.heartbeat", "heartbeat_command"),
    "repair": ("replicator.commands.repair", "repair_command"),
    "restore": ("replicator.commands.restore", "restore_command"),
    "run": ("replicator.commands.run", "run_command"),
    "status": ("replicator.commands.status", "status_command"),
    "verify": ("replicator.commands.verify", "verify_command"),
}


def load(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        # ``--help`` lists every command: it loads them all, which is fine
        # for help; a real run loads only the one it invokes.
        return load(cmd_name)


__all__ = ["COMMANDS", "LazyGroup", "load"]
