"""The ``replicator`` program: what runs before a command, and the plain
``backfill`` without click.

A scheduled or benchmarked ``replicator backfill --config F --json`` spends
most of its time starting up; importing click is ~10 % of a no-op run
(docs/performance.md, "boot"). When the command line is ``backfill`` with
nothing but plain ``--config``/``--prefix``/``--json``/``--allow-deletes``
options, :func:`main` runs the command's own code (commands/backfill_run.py)
straight away; any other command line, and any option it cannot read
exactly as click would (``--help``, a repeat, a value that looks like an
option, a --config that click would refuse), goes to the click group as
before. Both ways end the same: the same messages through the same
functions here, the same exit codes (a test runs both ways and compares the
bytes).

Nothing a user or the environment can cause ends in a Python traceback: a
ReplicatorError prints its message, an OSError its path and reason, and
anything else one line (the traceback only with ``--debug`` or
``REPLICATOR_DEBUG=1``).
"""

from __future__ import annotations

import gc
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from replicator.commands.common import EXIT_PROBLEM, fail
from replicator.commands.output import echo
from replicator.errors import ReplicatorError

T = TypeVar("T")

#: Set by ``--debug`` (or REPLICATOR_DEBUG=1): unexpected errors show their traceback.
debug = {"on": False}
#: Whether the collector was paused for this process's start-up.
_paused = {"gc": False}


def debugging() -> bool:
    return debug["on"] or os.environ.get("REPLICATOR_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> str:
    """One line for an exception replicator did not raise on purpose."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def start_up() -> None:
    """Run as the program: the collector waits until the command is loaded.

    Start-up creates ~50,000 objects that live as long as the process
    (modules, classes, the config tables); the cyclic collector ran ~60
    times over them while ``backfill`` was imported."""
    # replicator uses no pydantic plugin; looking for them reads the entry
    # points of every installed distribution (~10 ms).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if gc.isenabled():
        gc.disable()
        _paused["gc"] = True


def start_up_done() -> None:
    """What exists now is start-up, kept for the whole run: frozen out of
    later collections, and the collector runs again."""
    if _paused["gc"]:
        _paused["gc"] = False
        gc.freeze()
        gc.enable()


def unexpected(exc: Exception) -> NoReturn:
    """The last resort: one line (a traceback only when debugging), exit 1."""
    if debugging():
        import traceback  # noqa: PLC0415 - 16 ms of every start-up otherwise

        traceback.print_exc()
    else:
        hint = " (run with --debug or REPLICATOR_DEBUG=1 for the traceback)"
        echo(f"error: {describe(exc)}{hint}", err=True)
    sys.exit(EXIT_PROBLEM)


def guarded(work: Callable[[], T], passed: tuple[type[BaseException], ...] = ()) -> T:
    """``work()``, its errors turned into one line and an exit code;
    exceptions of the ``passed`` types go on up (click's own)."""
    try:
        return work()
    except ReplicatorError as exc:
        fail(exc)
    except passed:
        raise
    except Exception as exc:
        unexpected(exc)


#: The plain backfill options: position in plain_backfill's answer.
_VALUES = {"--config": 0, "--prefix": 1}
_FLAGS = {"--json": 2, "--allow-deletes": 3}


def _readable_as_click(path: str) -> bool:
    """Whether click's Path(dir_okay=False) takes ``path`` as it is: missing
    (load_settings names it), or a readable non-directory."""
    try:
        st = os.stat(path)
    except OSError:
        return True
    return not stat.S_ISDIR(st.st_mode) and os.access(path, os.R_OK)


def plain_backfill(args: list[str]) -> tuple[Path | None, str, bool, bool] | None:
    """``(config_path, prefix, as_json, allow_deletes)`` of a plain
    ``backfill`` command line; None for anything click should read."""
    if args[:1] != ["backfill"]:
        return None
    found: list[object] = [None, "", False, False]
    seen: set[str] = set()
    rest = iter(args[1:])
    for arg in rest:
        name, eq, value = arg.partition("=")
        if name in seen:
            return None
        seen.add(name)
        if name in _FLAGS and not eq:
            found[_FLAGS[name]] = True
        elif name in _VALUES:
            if not eq:
                value = next(rest, "-")  # missing: click's message
                if value.startswith("-"):
                    return None
            if name == "--config":
                if not value or not _readable_as_click(value):
                    return None
                found[0] = Path(value)
            else:
                found[1] = value
        else:
            return None
    config_path, prefix, as_json, allow_deletes = found
    assert config_path is None or isinstance(config_path, Path)
    return config_path, str(prefix), bool(as_json), bool(allow_deletes)


def _run_plain(plain: tuple[Path | None, str, bool, bool]) -> NoReturn:
    """What the click group does for ``backfill``, without click."""
    start_up()
    try:
        from replicator.commands.backfill_run import backfill_run  # noqa: PLC0415
        from replicator.memory import pin_mmap_threshold  # noqa: PLC0415

        pin_mmap_threshold()
        start_up_done()
        guarded(lambda: backfill_run(*plain))
    except (EOFError, KeyboardInterrupt):
        echo("", err=True)  # as click's main: a new line, then "Aborted!"
        echo("Aborted!", err=True)
        sys.exit(1)
    finally:
        start_up_done()
    sys.exit(0)


def main(prog_name: str | None = None) -> None:
    """The console script: a plain backfill runs here, anything else in click."""
    complete = f"_{(prog_name or 'replicator').replace('-', '_').upper()}_COMPLETE"
    plain = None if complete in os.environ else plain_backfill(sys.argv[1:])
    if plain is not None:
        _run_plain(plain)
    from replicator.cli import main as group  # noqa: PLC0415 - click only for the rest

    group(prog_name=prog_name)
