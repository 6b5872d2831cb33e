"""``replicator heartbeat``: write the heartbeat canary into the source and
report its age at every peer (see :mod:`replicator.heartbeat`).

Each round writes one beat, then measures the age of the newest beat durable
at each peer. ``--once`` runs one round (cron, tests); otherwise a round runs
every ``--interval`` seconds until SIGINT/SIGTERM. Exit codes: 0 beats were
written (a peer without a beat yet is reported, not an error: the first beat
needs the daemon to carry it); 1 a beat or a peer listing failed; 2 usage or
configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import click

from replicator import config
from replicator.commands.common import config_option, exit_codes, load_settings, open_for_reading
from replicator.commands.output import echo_json
from replicator.drill_export import ExportError, publish
from replicator.errors import ConfigError
from replicator.heartbeat import DEFAULT_KEY, PeerAge, age_at, beat, heartbeat_key, textfile


@click.command("heartbeat")
@config_option
@click.option(
    "--key",
    help=f"Heartbeat object's key [default: service.heartbeat_key, else {DEFAULT_KEY}].",
)
@click.option("--interval", default=30.0, show_default=True, type=click.FloatRange(min=1.0))
@click.option("--once", is_flag=True, help="One round: write a beat, report the ages, exit.")
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write replicator_heartbeat_age_seconds here each round (node-exporter textfile).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per round on stdout.")
def heartbeat_command(
    *,
    config_path: Path | None,
    key: str | None,
    interval: float,
    once: bool,
    textfile: Path | None,
    as_json: bool,
) -> None:
    """Write the heartbeat canary into the source; report its age at every peer."""
    with exit_codes():
        settings = load_settings(config_path)
        if textfile is not None and not textfile.parent.is_dir():
            raise ConfigError(f"--textfile {textfile}: directory {textfile.parent} does not exist")
        every = None if once else interval
        key = key or settings.service.heartbeat_key
        asyncio.run(_rounds(settings, key, every, textfile, as_json=as_json))


async def _rounds(
    settings: config.Settings,
    key: str,
    interval: float | None,
    out: Path | None,
    *,
    as_json: bool,
) -> None:
    """A round every ``interval`` seconds until a signal; one if None."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while True:
        await beat(settings, key)
        ages = await _ages(settings, heartbeat_key(settings, key))
        _report(ages, as_json)
        if out is not None:
            try:
                await asyncio.to_thread(publish, out, textfile(ages))
            except OSError as exc:
                raise ExportError(f"--textfile {out}: cannot write: {exc}") from exc
        if interval is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return


async def _ages(settings: config.Settings, key: str) -> list[PeerAge]:
    ages = []
    for dest in settings.destinations:
        backend = await open_for_reading(settings, dest.name)
        try:
            age = await age_at(backend, settings.source.bucket, key, time.time_ns())
        finally:
            await backend.close()
        ages.append(PeerAge(dest.name, age))
    return ages


def _report(ages: list[PeerAge], as_json: bool) -> None:
    if as_json:
        echo_json({"time": time.time(), "ages": {a.destination: a.age_seconds for a in ages}})
        return
    for a in ages:
        shown = "no heartbeat yet" if a.age_seconds is None else f"{a.age_seconds:.3f}s"
        click.echo(f"heartbeat age at {a.destination!r}: {shown}")
