"""``replicator drill``: restore from a peer into scratch space, verify every
byte, and report the measured RTO.

Exit codes: 0 the drill restored at least one object and every restored byte
matched its manifest; 1 any problem (a chunk or object that does not verify,
a missing pack, nothing to restore); 2 usage or configuration error. With
``--textfile`` (node-exporter's textfile collector) or ``--pushgateway`` the
result is also exported as ``replicator_drill_*{destination}``, also when the
drill fails; a failed export exits 1 after the report.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from replicator import config
from replicator.commands.common import (
    config_option,
    exit_codes,
    load_settings,
    open_for_reading,
    parallel_option,
)
from replicator.commands.output import echo_json
from replicator.commands.progress import progress_display
from replicator.commands.restore import described, segments_named_here
from replicator.drill import DrillReport, drill
from replicator.drill_export import push, write_textfile
from replicator.errors import ConfigError
from replicator.restore import Progress


@click.command("drill")
@config_option
@click.option("--destination", required=True, help="Peer to restore from.")
@click.option(
    "--sample",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Fraction of keys to restore (their latest versions); 1 = everything.",
)
@click.option("--seed", type=int, help="Seed of the --sample draw (random and reported if unset).")
@click.option(
    "--scratch",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory under which the drill restores (removed afterwards); default: $TMPDIR.",
)
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the result here in Prometheus text format (node-exporter textfile collector).",
)
@click.option(
    "--pushgateway",
    metavar="URL",
    help="Push the result to this Prometheus Pushgateway (job replicator-drill).",
)
@parallel_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
def drill_command(
    *,
    config_path: Path | None,
    destination: str,
    sample: float,
    seed: int | None,
    scratch: Path | None,
    textfile: Path | None,
    pushgateway: str | None,
    parallel: int,
    as_json: bool,
) -> None:
    """Restore the latest versions (all, or a sample) into scratch space,
    verify every byte, and print the measured RTO."""
    seed = secrets.randbelow(2**32) if seed is None else seed
    with exit_codes():
        settings = load_settings(config_path)
        _check_outputs(scratch, textfile, pushgateway)
        with progress_display("drill.progress") as progress, segments_named_here():
            options = {"sample": sample, "seed": seed, "parallel": parallel}
            report = asyncio.run(_run(settings, destination, scratch, progress, **options))
    _report(report, as_json)
    with exit_codes():  # the drill's own result is printed even if exporting fails
        if textfile is not None:
            write_textfile(textfile, report)
        if pushgateway is not None:
            push(pushgateway, report)
    sys.exit(0 if report.ok else 1)


def _check_outputs(scratch: Path | None, textfile: Path | None, pushgateway: str | None) -> None:
    """Fail before the restore, not after an hour of it."""
    if pushgateway is not None and not pushgateway.startswith(("http://", "https://")):
        raise ConfigError(f"--pushgateway {pushgateway}: not an http:// or https:// URL")
    if scratch is not None and not scratch.is_dir():
        raise ConfigError(f"--scratch {scratch}: not an existing directory")
    if textfile is not None and not textfile.parent.is_dir():
        raise ConfigError(f"--textfile {textfile}: directory {textfile.parent} does not exist")


async def _run(
    settings: config.Settings,
    destination: str,
    scratch: Path | None,
    progress: Progress,
    **options: Any,
) -> DrillReport:
    backend = await open_for_reading(settings, destination)
    try:
        return await drill(
            backend,
            destination,
            settings.source.bucket,
            scratch,
            progress=progress,
            **options,
        )
    finally:
        await backend.close()


def _report(report: DrillReport, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_json())
        return
    for p in report.problems:
        click.echo(f"problem: {described(p)}", err=True)
    scope = "every key" if report.sample >= 1 else f"a sample of {report.sample:g}"
    rate = report.bytes / report.rto_seconds / 1e6 if report.rto_seconds else 0.0
    click.echo(
        f"drill {report.destination!r}: {scope} (seed {report.seed}): {report.selected} of "
        f"{report.keys} keys, restored and verified {report.objects} objects, {report.bytes} "
        f"bytes; RTO {report.rto_seconds:.3f}s ({rate:.1f} MB/s), read-back check "
        f"{report.check_seconds:.3f}s; {len(report.problems)} problems"
    )
    if report.sample < 1:
        click.echo(
            f"estimated RTO for every key: {report.estimated_full_rto_seconds:.1f}s "
            "(scaled by key count)"
        )
    click.echo("ok" if report.ok else "FAILED")
