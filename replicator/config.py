"""The configuration tree: validated once at start, unknown keys rejected.

Loaded from TOML (``--config FILE``, else ``$REPLICATOR_CONFIG``, else
``./replicator.toml``). A bad file gets one message naming the key and
exit code 2 (ConfigError). Credentials never live here: they come from the
standard AWS chain (env vars, shared config/credentials files, instance
roles), so nothing secret is ever printed with the configuration.

Import every table from here: the ``[kafka]`` table lives in
``config_kafka.py`` (a pydantic model, imported only when a file has a
``[kafka]`` table or code asks for ``KafkaSettings``) and the strict base of
the other tables in ``config_base.py``, which validates without pydantic: its
import and model building were a third of every command's start-up.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from replicator._native import ChunkerParams
from replicator.config_base import Invalid, Table, setting, where
from replicator.errors import ConfigError

if TYPE_CHECKING:
    from replicator.config_kafka import KafkaSettings as KafkaSettings  # noqa: PLC0414


def __getattr__(name: str) -> object:
    """``KafkaSettings`` (pydantic) is imported on first use, not by every command."""
    if name == "KafkaSettings":
        from replicator.config_kafka import KafkaSettings  # noqa: PLC0415

        return KafkaSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FsSourceSettings(Table):
    type: Literal["fs"] = "fs"
    path: Path = setting(blank=False, doc="Directory tree whose files are replicated.")
    bucket: str = setting(
        default="local", blank=False, doc="Name recorded as the bucket in manifests."
    )
    settle_seconds: float = setting(
        default=2.0, gt=0, le=3600, doc="A file not closed is replicated once unchanged this long."
    )
    ignore: list[str] = setting(
        default_factory=lambda: ["*.tmp", ".*", "*.partial", "*~"],
        doc="fnmatch patterns of names (any path segment) the watcher never replicates.",
    )


class S3SourceSettings(Table):
    type: Literal["s3"]
    bucket: str = setting(blank=False, doc="Source bucket.")
    prefix: str = setting(default="", doc="Only keys under this prefix.")


#: Told apart by their ``type`` key.
SourceSettings = FsSourceSettings | S3SourceSettings


class S3EndpointSettings(Table):
    endpoint_url: str | None = setting(default=None, doc="S3-compatible endpoint; AWS when unset.")
    region: str = setting(default="us-east-1", doc="Signing region.")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    ca_bundle: Path | None = setting(default=None, doc="CA bundle for TLS verification.")


class S3OriginSettings(S3EndpointSettings):
    type: Literal["s3"] = "s3"
    read_size: int = setting(
        default=8 * 1024 * 1024,
        ge=1024 * 1024,
        doc="Bytes per ranged GET; three such windows are in memory per large object.",
    )


#: The RPO the alert rules compare each peer's measured RPO with.
RPO_DOC = "RPO target of this peer, in seconds."


class FsDestinationSettings(Table):
    name: str = setting(blank=False, doc="Peer name, used in metrics and commands.")
    rpo_target_seconds: float = setting(default=300.0, gt=0, doc=RPO_DOC)
    type: Literal["fs"] = "fs"
    path: Path = setting(blank=False, doc="Root directory of the replica store.")


class S3DestinationSettings(S3EndpointSettings):
    name: str = setting(blank=False, doc="Peer name, used in metrics and commands.")
    rpo_target_seconds: float = setting(default=300.0, gt=0, doc=RPO_DOC)
    type: Literal["s3"]
    bucket: str = setting(blank=False, doc="Bucket holding the replica store.")
    prefix: str = setting(default="", doc="Key prefix of the replica store inside the bucket.")
    # A dead or hung endpoint fails after max_attempts * timeout, seconds not minutes.
    connect_timeout: float = setting(
        default=5.0, gt=0, le=600, doc="Seconds to wait for a TCP/TLS connection."
    )
    read_timeout: float = setting(
        default=10.0, gt=0, le=3600, doc="Seconds to wait for the server's next bytes."
    )
    max_attempts: int = setting(
        default=3, ge=1, le=20, doc="Tries per request (timeouts, 5xx) before the peer fails."
    )


#: Told apart by their ``type`` key.
DestinationSettings = FsDestinationSettings | S3DestinationSettings


class ChunkingSettings(Table):
    min_size: int = setting(default=16384, doc="FastCDC minimum chunk size (bytes, even).")
    avg_size: int = setting(default=65536, doc="FastCDC average chunk size (bytes, even).")
    max_size: int = setting(default=262144, doc="FastCDC maximum chunk size (bytes, even).")
    normalization: int = setting(default=1, ge=0, le=3, doc="FastCDC normalization level.")
    seed: int = setting(default=0, ge=0, lt=2**64, doc="Gear table seed.")

    def _after(self) -> None:
        self.params()  # raises ValueError naming the parameter

    def params(self) -> ChunkerParams:
        return ChunkerParams(
            self.min_size, self.avg_size, self.max_size, self.normalization, self.seed
        )


def _zstd_installed(value: str) -> str:
    if value == "zstd" and importlib.util.find_spec("zstandard") is None:
        raise ValueError(
            "'zstd' needs the zstandard package, a dependency of replicator: "
            "reinstall replicator or run `pip install zstandard`"
        )
    return value


class StoreSettings(Table):
    pack_size: int = setting(
        default=16 * 1024 * 1024, ge=1024 * 1024, le=1024**3, doc="Target pack size in bytes."
    )
    compression: Literal["none", "zstd"] = setting(
        default="none", after=_zstd_installed, doc="Per-chunk compression."
    )
    concurrency: int = setting(default=4, ge=1, le=256, doc="Objects processed at once.")
    cache_dir: Path | None = setting(
        default=None, doc="Local index cache; default ~/.cache/replicator."
    )
    max_pack_delay: float = setting(
        default=0.5, gt=0, le=60, doc="Seconds a waiting change may sit in an open pack."
    )
    format_version: Literal[2, 3] = setting(
        default=3,
        doc=(
            "Store format of peers created from now on (default 3: the manifests of many keys "
            "in segments, docs/store-format.md §13; 2: one object per manifest); a peer keeps "
            "the format it was created with."
        ),
    )
    max_delete_fraction: float = setting(
        default=0.1,
        ge=0.0,
        le=1.0,
        doc=(
            "Refuse a run that would tombstone more than this share of a peer's live keys "
            "(any key when the source lists nothing), unless --allow-deletes is given."
        ),
    )


#: Where the heartbeat canary lives under the source (directory or bucket
#: prefix). Not under a dot directory: the directory watcher's default
#: ignore patterns (``.*``) would never replicate it.
HEARTBEAT_KEY = "_replicator/heartbeat"


#: Default ``service.max_in_flight`` per source (see Settings.small_in_flight).
FS_SMALL_IN_FLIGHT, S3_SMALL_IN_FLIGHT = 8, 32


def _relative_key(value: str) -> str:
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{value!r} must be a relative key: no empty, '.' or '..' segment")
    return value


def _kafka_table(value: object) -> KafkaSettings | None:
    """The ``[kafka]`` table through its pydantic model, imported only here."""
    from pydantic import ValidationError  # noqa: PLC0415 - only for a [kafka] table

    from replicator.config_kafka import KafkaSettings  # noqa: PLC0415

    if value is None or isinstance(value, KafkaSettings):
        return value
    try:
        return KafkaSettings.model_validate(value)
    except ValidationError as exc:
        raise Invalid(
            [(tuple(e["loc"]), str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()]
        ) from None


class ServiceSettings(Table):
    """The daemon (``replicator run``)."""

    metrics_address: str = setting(default="127.0.0.1:9464", doc="host:port of /metrics.")
    drain_timeout_seconds: float = setting(
        default=30.0, ge=0, le=3600, doc="On SIGTERM, time to finish what is in flight."
    )
    max_in_flight: int | None = setting(
        default=None,
        ge=1,
        le=1024,
        doc="Small objects being read at once [default: 8 for a directory source, "
        "32 for an S3 source, whose reads wait on the network].",
    )
    large_object_size: int = setting(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        doc="Objects of at least this many bytes are large: own workers and packs.",
    )
    max_large_in_flight: int = setting(
        default=2,
        ge=1,
        le=64,
        doc="Large objects being read at once (three read windows each).",
    )
    max_pending: int = setting(
        default=100_000, ge=1, doc="Changes held per peer before the source is paused."
    )
    retry_max_seconds: float = setting(
        default=30.0, gt=0, le=3600, doc="Cap of the backoff between retries of a failing peer."
    )
    # Off by default: the beat writes into the source, which a least-privilege
    # (read-only) source credential does not allow (docs/install.md).
    heartbeat_interval_seconds: float = setting(
        default=0.0,
        ge=0,
        le=86400,
        doc="Write the heartbeat canary into the source this often; 0 disables it.",
    )
    heartbeat_key: str = setting(
        default=HEARTBEAT_KEY,
        after=_relative_key,
        doc="Key of the heartbeat canary under the source.",
    )


class Settings(Table):
    source: SourceSettings
    origin: S3OriginSettings | None = None
    destinations: list[DestinationSettings] = setting(min_length=1)
    chunking: ChunkingSettings = setting(default_factory=ChunkingSettings)
    store: StoreSettings = setting(default_factory=StoreSettings)
    service: ServiceSettings = setting(default_factory=ServiceSettings)
    kafka: KafkaSettings | None = setting(default=None, parse=_kafka_table)

    def _after(self) -> None:
        """Checks across tables: names, places, the canary, the event feed."""
        names = [d.name for d in self.destinations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"destination names must be unique, repeated: {sorted(dup)}")
        if isinstance(self.source, S3SourceSettings) and self.origin is None:
            raise ValueError("an s3 source needs an [origin] table (endpoint_url, region)")
        check_places(self)
        if isinstance(self.source, FsSourceSettings):
            _heartbeat_not_ignored(self.service.heartbeat_key, self.source.ignore)
        if self.kafka is not None and not isinstance(self.source, S3SourceSettings):
            raise ValueError("a [kafka] table needs an s3 source (the bucket its events name)")

    def small_in_flight(self) -> int:
        """``service.max_in_flight``, or its default for the source. An S3 read
        mostly waits on the network: with 8 at once a 50 objects/s load through
        Kafka queued (p50 1.8 s), with 32 it did not (p50 0.57 s, same run)."""
        if self.service.max_in_flight is not None:
            return self.service.max_in_flight
        return (
            S3_SMALL_IN_FLIGHT if isinstance(self.source, S3SourceSettings) else FS_SMALL_IN_FLIGHT
        )

    def destination(self, name: str) -> FsDestinationSettings | S3DestinationSettings:
        for d in self.destinations:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.destinations)
        raise ConfigError(f"no destination named {name!r} (configured: {known})")


def _heartbeat_not_ignored(key: str, patterns: list[str]) -> None:
    """The watcher's own rule (fnmatch on every segment): an ignored canary
    would be written and never replicated, its age growing for ever."""
    for part in key.split("/"):
        for pattern in patterns:
            if fnmatch.fnmatchcase(part, pattern):
                raise ValueError(
                    f"service.heartbeat_key {key!r}: segment {part!r} matches "
                    f"source.ignore pattern {pattern!r}, so it would never be replicated"
                )


def _place(
    where: FsSourceSettings | S3SourceSettings | FsDestinationSettings | S3DestinationSettings,
    endpoint: str,
) -> str:
    """Where a source or destination keeps its data, as a comparable path:
    ``fs:/abs/path/`` or ``s3:<endpoint>/<bucket>/<prefix>/``."""
    if isinstance(where, FsSourceSettings | FsDestinationSettings):
        return f"fs:{str(where.path.expanduser().resolve()).rstrip('/')}/"
    prefix = where.prefix.strip("/")
    return f"s3:{endpoint}/{where.bucket}/{prefix + '/' if prefix else ''}"


def _overlap(a: str, b: str) -> str | None:
    if a == b:
        return "is the same place as"
    if a.startswith(b):
        return "is inside"
    if b.startswith(a):
        return "contains"
    return None


def check_places(settings: Settings) -> None:
    """Refuse a destination that overlaps the source or another destination:
    backfill would replicate its own store, or two peers would share one."""
    origin = settings.origin.endpoint_url if settings.origin else None
    source = _place(settings.source, origin or "aws")
    seen: list[tuple[str, str]] = []
    for d in settings.destinations:
        here = _place(
            d, (d.endpoint_url if isinstance(d, S3DestinationSettings) else None) or "aws"
        )
        how = _overlap(here, source)
        if how:
            raise ValueError(f"destination {d.name!r} ({here}) {how} the source ({source})")
        for name, there in seen:
            how = _overlap(here, there)
            if how:
                raise ValueError(f"destination {d.name!r} ({here}) {how} destination {name!r}")
        seen.append((d.name, here))


def default_path() -> Path:
    env = os.environ.get("REPLICATOR_CONFIG")
    return Path(env) if env else Path("replicator.toml")


def load(path: Path | None = None) -> Settings:
    """Read and validate the configuration; ConfigError names the bad key."""
    path = path or default_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc
    try:
        return Settings.model_validate(raw)
    except Invalid as exc:
        lines = (f"{path}: {where(loc)}: {msg}" for loc, msg in exc.problems)
        raise ConfigError("\n".join(lines)) from None
