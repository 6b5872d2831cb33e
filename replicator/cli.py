"""The ``replicator`` command line (click). Exit codes: 0 ok, 1 a problem was
found (verify/restore), 2 usage or configuration error.

Each command lives in its own module; this file only assembles the group.
The program itself (the console script) is replicator/program.py: it runs
a plain ``backfill`` without click and hands everything else to this group.
Nothing a user or the environment can cause ends in a Python traceback
(program.guarded).
"""

from __future__ import annotations

from typing import Any

import click

from replicator import __version__
from replicator.commands import COMMANDS, load
from replicator.memory import pin_mmap_threshold
from replicator.program import debug as _debug
from replicator.program import describe, guarded, start_up, start_up_done

__all__ = ["_debug", "describe", "main"]


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        return load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the summaries: importing every
        command (pydantic, the pipeline, the bench) only to print one line
        each cost more than the rest of the start-up."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            # A stand-in shortens the summary exactly as click shortens a help.
            cmd = self.commands.get(name) or click.Command(name, help=COMMANDS[name].summary)
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _Group(LazyGroup):
    """Turns any error into one line on stderr and an exit code, no traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # Only as the program (arguments from sys.argv): a test invoking the
        # group in its own process keeps that process as it is.
        if (args[0] if args else kwargs.get("args")) is None:
            start_up()
        try:
            return super().main(*args, **kwargs)
        finally:
            start_up_done()

    def invoke(self, ctx: click.Context) -> object:
        # click's own usage errors and exits are already one line.
        passed = (click.ClickException, click.exceptions.Exit, click.Abort)
        return guarded(lambda: LazyGroup.invoke(self, ctx), passed)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="replicator")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def main(debug: bool) -> None:
    """Event-driven, delta-efficient disaster recovery for AI data."""
    _debug["on"] = debug
    pin_mmap_threshold()
    # The command's module is imported by now: click resolves it before
    # this callback runs.
    start_up_done()
