"""The work of ``replicator backfill``, without click: the click command
(commands/backfill.py) and the program's plain command line
(replicator/program.py) both call :func:`backfill_run`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from replicator.commands.common import EXIT_PROBLEM, load_settings
from replicator.commands.output import echo, echo_json
from replicator.commands.progress import backfill_progress
from replicator.pipeline.backfill import run_backfill
from replicator.pipeline.summary import BackfillSummary


def _human(s: BackfillSummary) -> str:
    lines = [
        f"objects {s.objects}: {s.replicated} replicated, {s.unchanged} unchanged, "
        f"{s.superseded} superseded, {s.errors} errors; {s.removed} tombstones"
        + "".join(f", {n} refused at {p!r}" for p, n in s.refused_removals.items()),
        f"read {s.source_bytes} bytes from the source in {s.elapsed_seconds:.1f} s",
    ]
    for name in s.shipped_bytes:
        lines.append(
            f"  {name}: shipped {s.shipped_bytes[name]} bytes, deduplicated "
            f"{s.deduplicated_bytes[name]}, {s.packs[name]} packs, "
            f"{s.manifests[name]} manifests, {s.put_requests[name]} PUTs"
            + (f", {s.caught_up[name]} read again alone (behind)" if name in s.caught_up else "")
        )
    lines += [
        f"  {name}: DOWN ({why}); {s.not_sent.get(name, 0)} objects not sent to it"
        for name, why in s.down.items()
    ]
    lines += [f"  error: {e}" for e in s.error_samples]
    return "\n".join(lines)


def backfill_run(config_path: Path | None, prefix: str, as_json: bool, allow_deletes: bool) -> None:
    """Run the backfill and print its summary; exit code 1 when some object failed."""
    settings = load_settings(config_path)
    with backfill_progress(as_json) as progress:
        summary = asyncio.run(run_backfill(settings, prefix, progress, allow_deletes=allow_deletes))
    if as_json:
        echo_json(summary.to_json())
    else:
        echo(_human(summary))
    if summary.errors:
        sys.exit(EXIT_PROBLEM)
