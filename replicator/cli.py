"""The ``replicator`` command line (click). Exit codes: 0 ok, 1 a problem was
found (verify/restore), 2 usage or configuration error.

Each command lives in its own module; this file only assembles the group.
Nothing a user or the environment can cause ends in a Python traceback: a
ReplicatorError prints its message, an OSError its path and reason, and
anything else one line (the traceback only with ``--debug`` or
``REPLICATOR_DEBUG=1``).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

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


#: Whether the collector was paused for this process's start-up.
_paused = {"gc": False}


def _start_up() -> None:
    """Run as the program: the collector waits until the command is loaded.

    Start-up creates ~50,000 objects that live as long as the process
    (modules, classes, the config models' validators); the cyclic collector
    ran ~60 times over them while ``backfill`` was imported."""
    # replicator uses no pydantic plugin; looking for them reads the entry
    # points of every installed distribution (~10 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if gc.isenabled():
        gc.disable()
        _paused["gc"] = True


def _start_up_done() -> None:
    """What exists now is start-up, kept for the whole run: frozen out of
    later collections, and the collector runs again."""
    if _paused["gc"]:
        _paused["gc"] = False
        gc.freeze()
        gc.enable()


class _Group(LazyGroup):
    """Turns any error into one line on stderr and an exit code, no traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # Only as the program (arguments from sys.argv): a test invoking the
        # group in its own process keeps that process as it is.
        if (args[0] if args else kwargs.get("args")) is None:
            _start_up()
        try:
            return super().main(*args, **kwargs)
        finally:
            _start_up_done()

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ReplicatorError as exc:
            fail(exc)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own usage errors and exits, already one line
        except Exception as exc:  # the last resort: never a traceback by default
            if _debugging():
                import traceback  # noqa: PLC0415 - 16 ms of every start-up otherwise

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
    # The command's module is imported by now: click resolves it before
    # this callback runs.
    _start_up_done()
