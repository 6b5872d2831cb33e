"""The store commands (backfill, restore, verify, ...), one module each.

Adding a command is one import line below: ``register`` adds every click
command this module imports, so nothing else needs to change.
"""

from __future__ import annotations

import click

from replicator.commands.backfill import backfill
from replicator.commands.demo import demo_command as demo_command
from replicator.commands.drill import drill_command as drill_command
from replicator.commands.heartbeat import heartbeat_command as heartbeat_command
from replicator.commands.repair import repair_command as repair_command
from replicator.commands.restore import restore_command as restore_command
from replicator.commands.run import check_config_command as check_config_command
from replicator.commands.run import run_command as run_command
from replicator.commands.status import status_command as status_command
from replicator.commands.verify import verify_command as verify_command


def register(group: click.Group) -> None:
    for obj in list(globals().values()):
        if isinstance(obj, click.Command):
            group.add_command(obj)


__all__ = ["backfill", "register"]
