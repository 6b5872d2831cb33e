"""What every command shares: its options, loading the settings, exit codes,
and opening a peer for reading.

Exit codes (DESIGN.md): 0 the work was done, 1 a problem was found (or some
object failed), 2 a usage or configuration error. A ReplicatorError carries
its own code (``exit_code``) and ends a command as one line on stderr,
through :func:`fail`, whether the command runs under the ``replicator``
group or on its own.

Imports stay light (no pydantic, no rich, no aiobotocore, no click at
import time): the top-level group imports this module for every command,
``--help`` included, and the program's plain ``backfill`` runs without
click (replicator/program.py). The options import click when a command
module applies them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from replicator.commands.output import echo
from replicator.errors import ReplicatorError

if TYPE_CHECKING:
    from replicator.config import Settings
    from replicator.store.backend import Backend

#: Every selected object done (and verified, where the command verifies).
EXIT_OK = 0
#: A problem was found, or some object failed.
EXIT_PROBLEM = 1
#: Usage or configuration error (also ConfigError.exit_code).
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., object])


def config_option(f: F) -> F:
    """``--config FILE``; without it ``$REPLICATOR_CONFIG``, else ``./replicator.toml``."""
    import click  # noqa: PLC0415 - the module doc

    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Config file (default $REPLICATOR_CONFIG, else ./replicator.toml).",
    )(f)


def parallel_option(f: F) -> F:
    """``--parallel N``: objects handled at once by restore, verify and drill."""
    import click  # noqa: PLC0415 - the module doc

    return click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 64))(f)


def json_option(help_text: str) -> Callable[[F], F]:
    """``--json``: the command's one JSON document on stdout (``as_json``)."""
    import click  # noqa: PLC0415 - the module doc

    return click.option("--json", "as_json", is_flag=True, help=help_text)


def load_settings(path: Path | None) -> Settings:
    """The validated configuration; ConfigError (exit 2) names the bad key."""
    from replicator import config  # noqa: PLC0415 - pydantic only once a command runs

    return config.load(path)


def fail(exc: ReplicatorError) -> NoReturn:
    """End the command with the error's one line and its exit code."""
    echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """A ReplicatorError ends the command with its message and exit code
    (as the top-level group does), also when the command runs on its own."""
    try:
        yield
    except ReplicatorError as exc:
        fail(exc)


async def open_for_reading(settings: Settings, destination: str) -> Backend:
    """The destination's backend, after checking that it holds a store this
    version can read. Unlike the write path, the configured chunker need not
    match: every manifest carries the parameters it was written with."""
    from replicator.store.peer import make_backend  # noqa: PLC0415 - not for `--help`
    from replicator.store.reader import read_store_config  # noqa: PLC0415

    backend = make_backend(settings.destination(destination))
    try:
        await read_store_config(backend)
    except BaseException:
        await backend.close()
        raise
    return backend
