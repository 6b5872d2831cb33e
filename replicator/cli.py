"""The ``replicator`` command line (click). Exit codes: 0 ok, 1 a problem was
found (verify/restore), 2 usage or configuration error.

Each command lives in its own module; this file only assembles the group.
Nothing a user or the environment can cause ends in a Python traceback: a
ReplicatorError prints its message, an OSError its path and reason, and
anything else one line (the traceback only with ``--debug`` or
``REPLICATOR_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from replicator import __version__
from replicator.commands import LazyGroup
from replicator.commands.common import EXIT_PROBLEM, fail
from replicator.errors import ReplicatorError
from replicator.memory import pin_mmap_threshold

#: Set by ``--debug`` (or REPLICATOR_DEBUG=1): unexpected errors show their traceback.
_debug = {"on": False}


def _debugging() -> bool:
    return _debug["on"] or os.environ.get("REPLICATOR_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> str:
    """One line for an exception replicator did not raise on purpose."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Group(LazyGroup):
    """Turns any error into one line on stderr and an exit code, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ReplicatorError as exc:
            fail(exc)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own usage errors and exits, already one line
        except Exception as exc:  # the last resort: never a traceback by default
            if _debugging():
                traceback.print_exc()
            else:
                hint = " (run with --debug or REPLICATOR_DEBUG=1 for the traceback)"
                click.echo(f"error: {describe(exc)}{hint}", err=True)
            sys.exit(EXIT_PROBLEM)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="replicator")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def main(debug: bool) -> None:
    """Event-driven, delta-efficient disaster recovery for AI data."""
    _debug["on"] = debug
    pin_mmap_threshold()
