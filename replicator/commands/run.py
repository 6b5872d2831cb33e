"""``replicator run`` (the daemon) and ``replicator check-config``.

Both load the configuration the same way (``--config``, else
``$REPLICATOR_CONFIG``, else ``./replicator.toml``); a bad file, an
unusable path or an unreachable peer exits 2 with one line naming the key.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from replicator import config
from replicator.commands.common import config_option
from replicator.config import FsDestinationSettings, FsSourceSettings, Settings
from replicator.errors import ConfigError, NotFoundError, ReplicatorError
from replicator.metrics_http import parse_address
from replicator.store.format import CONFIG_KEY, StoreConfig
from replicator.store.peer import make_backend, store_config


@click.command("run")
@config_option
def run_command(config_path: Path | None) -> None:
    """Run the daemon: watch the source, keep every peer current.

    Exit 0 after SIGTERM/SIGINT and a drain; 2 when the configuration or a
    start-up check (a peer, the source path, the metrics address) fails."""
    # uvloop, structlog (and rich through it) only for `run`, not `check-config`
    from replicator import daemon, logs  # noqa: PLC0415

    settings = config.load(config_path)
    check_paths(settings)
    logs.configure("info")
    sys.exit(daemon.run(settings))


@click.command("check-config")
@config_option
def check_config_command(config_path: Path | None) -> None:
    """Validate the configuration, its paths and that every peer answers.

    Exit 0 when all is well, 2 naming the key and the reason otherwise."""
    settings = config.load(config_path)
    check_paths(settings)
    parse_address(settings.service.metrics_address)
    asyncio.run(check_peers(settings))
    if settings.kafka is not None:
        from replicator.sources.factory import check_kafka  # noqa: PLC0415 - aiokafka only here

        asyncio.run(check_kafka(settings))
    click.echo(
        f"configuration ok: source {_describe_source(settings)}, "
        f"{len(settings.destinations)} peers reachable"
    )


def _describe_source(settings: Settings) -> str:
    src = settings.source
    if isinstance(src, FsSourceSettings):
        return str(src.path)
    via = f" via kafka {','.join(settings.kafka.topics)}" if settings.kafka else ""
    return f"s3://{src.bucket}/{src.prefix}{via}"


def check_paths(settings: Settings) -> None:
    """The source directory is readable; fs peers' paths can be created/written."""
    src = settings.source
    if isinstance(src, FsSourceSettings):
        if not src.path.is_dir():
            raise ConfigError(f"source.path: {src.path} is not a directory")
        if not os.access(src.path, os.R_OK | os.X_OK):
            raise ConfigError(f"source.path: {src.path} is not readable")
    for i, dest in enumerate(settings.destinations):
        if isinstance(dest, FsDestinationSettings):
            existing = _nearest_existing(dest.path)
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"destinations[{i}].path: {dest.path} cannot be written "
                    f"({existing} is not a writable directory)"
                )
    cache = settings.store.cache_dir
    if cache is not None and not os.access(_nearest_existing(cache), os.W_OK | os.X_OK):
        raise ConfigError(f"store.cache_dir: {cache} cannot be written")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


async def check_peers(settings: Settings) -> None:
    """Each peer answers; a store already there matches the configuration."""
    wanted = store_config(settings)
    for i, dest in enumerate(settings.destinations):
        backend = make_backend(dest)
        try:
            found = StoreConfig.from_bytes(await backend.get(CONFIG_KEY))
        except NotFoundError:
            continue  # a new peer: `run` creates its store
        except ReplicatorError as exc:
            raise ConfigError(
                f"destinations[{i}] ({dest.name!r}): not reachable or not a store: {exc}"
            ) from None
        finally:
            await backend.close()
        try:
            found.check_matches(wanted, dest.name)
        except ReplicatorError as exc:
            raise ConfigError(f"destinations[{i}] ({dest.name!r}): {exc}") from None
