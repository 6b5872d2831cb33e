"""``replicator bench e2e``: the command line of both variants.

``--source dir`` (default) runs everything itself in a temporary folder.
``--source kafka`` needs a broker and an S3 bucket: ``--bootstrap-servers``,
``--bucket`` and ``--endpoint-url`` (credentials from the standard AWS
environment, never the command line); ``./dev bench-kafka`` starts the
project's own broker and S3 server on loopback and runs it against them.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError

from replicator.bench.chunk import parse_size
from replicator.bench.e2e import Load, print_result, run_bench
from replicator.bench.e2e_kafka import new_target, print_kafka_result, run_kafka_bench
from replicator.bench.e2e_scale import print_scale_out, run_scale_out
from replicator.bench.kafka_load import Endpoint, Shape
from replicator.commands.common import exit_codes
from replicator.commands.output import echo_json
from replicator.config import S3_SMALL_IN_FLIGHT
from replicator.errors import ConfigError

_F = TypeVar("_F", bound=Callable[..., Any])

KAFKA_ONLY = (
    "bootstrap_servers", "bucket", "endpoint_url", "scale_out", "source_latency", "max_pack_delay",
)  # fmt: skip


class ServiceError(ConfigError):
    """The broker or the bucket given on the command line cannot be used."""


def _in_workdir(
    keep: Path | None, body: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="replicator-e2e-")) if keep is None else keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(body(root))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _dir(opts: dict[str, Any]) -> dict[str, Any]:
    large_every = 10.0 if opts["large_every"] is None else opts["large_every"]
    large = parse_size(opts["large_size"])

    def body(root: Path) -> Coroutine[Any, Any, dict[str, Any]]:
        load = Load(root / "source", opts["rate"], large, large_every)
        return run_bench(root, opts["duration"], load, opts["large_burst"])

    return _in_workdir(opts["keep"], body)


def _kafka(opts: dict[str, Any]) -> dict[str, Any]:
    for name in ("bootstrap_servers", "bucket"):
        if not opts[name]:
            raise click.UsageError(f"--source kafka needs --{name.replace('_', '-')}")
    if opts["source_latency"] and not str(opts["endpoint_url"] or "").startswith("http://"):
        raise click.UsageError("--source-latency needs an http:// --endpoint-url")
    source = Endpoint(
        opts["endpoint_url"], opts["region"], opts["bucket"], opts["addressing_style"]
    )
    servers = [s.strip() for s in opts["bootstrap_servers"].split(",") if s.strip()]
    target = new_target(
        servers, source, opts["partitions"], opts["max_in_flight"], opts["max_pack_delay"] or 0.5
    )
    keep = opts["keep"] is not None
    max_size = parse_size(opts["max_size"])
    if opts["scale_out"]:
        backlog, latency = opts["backlog"], opts["source_latency"]
        return _in_workdir(opts["keep"], lambda root: run_scale_out(
            root, target, backlog, max_size, latency, keep=keep))  # fmt: skip
    large_every = 0.0 if opts["large_every"] is None else opts["large_every"]
    shape = Shape(opts["rate"], max_size, parse_size(opts["large_size"]), large_every)
    return _in_workdir(opts["keep"], lambda root: run_kafka_bench(
        root, target, opts["duration"], shape, keep=keep))  # fmt: skip


def _run_kafka(opts: dict[str, Any]) -> dict[str, Any]:
    """One line naming the service, exit 2, when the broker or bucket will not serve."""
    where = f"Kafka at {opts['bootstrap_servers']} / s3://{opts['bucket']}"
    try:
        return _kafka(opts)
    except KafkaError as exc:
        raise ServiceError(f"{where}: {type(exc).__name__}: {exc}") from None
    except (ClientError, BotoCoreError) as exc:
        raise ServiceError(f"{where}: {exc}") from None


def _print(result: dict[str, Any]) -> None:
    if result.get("scale_out"):
        print_scale_out(result)
    elif result.get("source") == "kafka":
        print_kafka_result(result)
    else:
        print_result(result)


def _ok(result: dict[str, Any]) -> bool:
    runs = result.get("runs", [result])
    return all(r["not_durable"] == 0 and r["daemon_exit"] == 0 for r in runs)


def _shown(
    name: str, default: Any, kind: Any = None, text: str | None = None
) -> Callable[[_F], _F]:
    """An option whose default ``--help`` shows (most of the bench's)."""
    return click.option(name, default=default, show_default=True, type=kind, help=text)


@click.command("e2e")
@_shown(
    "--source",
    "dir",
    click.Choice(["dir", "kafka"]),
    "Changes from a watched directory, or S3 notifications through Kafka.",
)
@_shown("--duration", 20.0, click.FloatRange(1, 3600))
@_shown(
    "--rate",
    50.0,
    click.FloatRange(0.1, 10_000),
    "Small objects (1 KiB to --max-size, log-uniform) per second.",
)
@_shown(
    "--max-size",
    "1MiB",
    None,
    "Largest small object (--source kafka; the directory variant uses 1 MiB).",
)
@_shown("--large-size", "64MiB", None, "Bytes per large object.")
@click.option(
    "--large-every",
    type=click.FloatRange(0),
    default=None,
    help="Seconds between large objects (0: none). [default: 10 dir, 0 kafka]",
)
@_shown(
    "--large-burst",
    0,
    click.IntRange(0, 1000),
    "Instead of the steady load: this many large objects at once (large MB/s vs backfill).",
)
@click.option("--bootstrap-servers", help="Kafka brokers, host:port[,host:port].")
@click.option("--endpoint-url", help="S3 endpoint of the source bucket (AWS when unset).")
@click.option("--bucket", help="Source bucket; the bench writes under replicator-bench/<tag>/.")
@_shown("--region", "us-east-1")
@_shown("--addressing-style", "path", click.Choice(["auto", "path", "virtual"]))
@_shown("--partitions", 6, click.IntRange(1, 1000), "Partitions of the bench's fresh events topic.")
@_shown(
    "--max-in-flight",
    S3_SMALL_IN_FLIGHT,
    click.IntRange(1, 1024),
    "Each daemon's service.max_in_flight (objects read at once).",
)
@click.option(
    "--max-pack-delay",
    type=click.FloatRange(0.01, 60),
    help="Each daemon's store.max_pack_delay (--source kafka).  [default: 0.5, the daemon's]",
)
@click.option(
    "--scale-out",
    is_flag=True,
    help="Drain --backlog objects with one daemon, then two in one group.",
)
@_shown("--backlog", 600, click.IntRange(1, 1_000_000))
@_shown(
    "--source-latency",
    0.0,
    click.FloatRange(0, 10),
    "Seconds added to every daemon request to the source (--scale-out).",
)
@click.option("--keep", type=click.Path(path_type=Path, file_okay=False), help="Keep the run here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def e2e(**opts: Any) -> None:
    """Event -> durable latency, throughput and RPO error through the daemon."""
    if opts["source"] == "dir":
        extra = [n for n in KAFKA_ONLY if opts[n]]
        if extra:
            raise click.UsageError(f"--{extra[0].replace('_', '-')} needs --source kafka")
    elif opts["large_burst"]:
        raise click.UsageError("--large-burst needs --source dir")
    with exit_codes():
        result = _dir(opts) if opts["source"] == "dir" else _run_kafka(opts)
    if opts.pop("as_json"):
        echo_json(result)
    else:
        _print(result)
    sys.exit(0 if _ok(result) else 1)
