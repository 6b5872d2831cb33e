"""``replicator verify``: check a peer's store structurally, or deeply.

Exit codes: 0 no problem found; 1 problems found (each names key, version,
pack and chunk); 2 usage or configuration error, or a store this version
cannot read.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
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
from replicator.origins import make_origin
from replicator.store.backends.fs import LEFTOVER_GRACE
from replicator.store.reader import Problem
from replicator.store.tempfiles import tree_leftovers
from replicator.verify import VerifyReport, verify
from replicator.verify_source import SourceFinding, SourceReport, verify_against_source


@click.command("verify")
@config_option
@click.option("--destination", required=True, help="Peer to check.")
@click.option("--prefix", help="Only keys of the source bucket starting with this prefix.")
@click.option("--deep", is_flag=True, help="Also fetch and re-hash every chunk.")
@click.option(
    "--sample",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Deep-check only this fraction of manifests (implies --deep).",
)
@click.option("--seed", type=int, help="Seed of the --sample draw (random and reported if unset).")
@parallel_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option(
    "--against-source",
    is_flag=True,
    help="Instead: compare the source listing with the peer's newest versions.",
)
def verify_command(
    *,
    config_path: Path | None,
    destination: str,
    prefix: str | None,
    deep: bool,
    sample: float | None,
    seed: int | None,
    parallel: int,
    as_json: bool,
    against_source: bool,
) -> None:
    """Check that every manifest's chunks exist (and, with --deep, re-hash).

    With --against-source, report every object missing at the peer, older
    than the source, or removed at the source without a tombstone."""
    if against_source:
        if deep or sample is not None:
            raise click.UsageError("--against-source cannot be combined with --deep or --sample")
        _against_source(config_path, destination, prefix or "", as_json)
        return
    deep = deep or sample is not None
    seed = secrets.randbelow(2**32) if seed is None else seed
    options = {"deep": deep, "sample": sample or 1.0, "seed": seed, "parallel": parallel}
    with exit_codes():
        settings = load_settings(config_path)
        with progress_display("verify.progress") as progress, segments_named_here():
            report = asyncio.run(_run(settings, destination, prefix, progress=progress, **options))
    _report(report, destination, prefix, as_json)
    sys.exit(0 if report.ok else 1)


async def _run(
    settings: config.Settings, destination: str, prefix: str | None, **options: Any
) -> VerifyReport:
    backend = await open_for_reading(settings, destination)
    try:
        report = await verify(backend, settings.source.bucket, prefix, **options)
    finally:
        await backend.close()
    dest = settings.destination(destination)
    if isinstance(dest, config.FsDestinationSettings):
        # Temporary files a killed backfill or daemon left (the next write removes them).
        before = time.time() - LEFTOVER_GRACE
        for path in await asyncio.to_thread(tree_leftovers, dest.path, before):
            message = f"leftover temporary file {path} (removed by the next backfill)"
            report.info.append(Problem("", "", message))
    return report


def _report(report: VerifyReport, destination: str, prefix: str | None, as_json: bool) -> None:
    if as_json:
        echo_json({"destination": destination, "prefix": prefix} | report.to_json())
        return
    for f in report.info:
        click.echo(f"info: pack={f.pack}: {f.message}" if f.pack else f"info: {f.message}")
    for p in report.problems:
        click.echo(f"problem: {described(p, chunk_fields=True)}", err=True)
    mode = "deep" if report.deep else "structural"
    if report.deep and report.sample < 1:
        mode = f"deep on a sample of {report.sample:g} (seed {report.seed}, --seed replays it)"
    click.echo(
        f"verified {report.manifests} manifests ({report.tombstones} tombstones), "
        f"{report.chunks} chunk references in {report.packs} packs of {destination!r}, {mode}: "
        f"{report.deep_checked} deep-checked, {report.bytes_rehashed} bytes re-hashed; "
        f"{len(report.problems)} problems, {len(report.info)} info, "
        f"{report.elapsed_seconds:.3f}s"
    )


def _against_source(config_path: Path | None, destination: str, prefix: str, as_json: bool) -> None:
    with exit_codes():
        settings = load_settings(config_path)
        report = asyncio.run(_run_source(settings, destination, prefix, not as_json))
    if as_json:
        echo_json({"destination": destination, "prefix": prefix} | report.to_json())
    click.echo(
        f"compared {report.listed} source objects with {report.peer_keys} keys at "
        f"{destination!r}: {report.in_sync} in sync, {len(report.findings)} problems, "
        f"{report.elapsed_seconds:.3f}s",
        err=as_json,
    )
    sys.exit(0 if report.ok else 1)


async def _run_source(
    settings: config.Settings, destination: str, prefix: str, echo: bool
) -> SourceReport:
    origin = make_origin(settings)
    try:
        await origin.check()
        backend = await open_for_reading(settings, destination)
        try:
            return await verify_against_source(
                origin, backend, prefix, _echo_finding if echo else None
            )
        finally:
            await backend.close()
    finally:
        await origin.close()


def _echo_finding(f: SourceFinding) -> None:
    click.echo(f"problem: key={f.key!r} version={f.version} {f.kind}: {f.message}", err=True)
