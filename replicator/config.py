"""The configuration tree: validated once at start, unknown keys rejected.

Loaded from TOML (``--config FILE``, else ``$REPLICATOR_CONFIG``, else
``./replicator.toml``). A bad file gets one message naming the key and
exit code 2 (ConfigError). Credentials never live here: they come from the
standard AWS chain (env vars, shared config/credentials files, instance
roles), so nothing secret is ever printed with the configuration.

Import every table from here: the ``[kafka]`` table lives in
``config_kafka.py`` and the strict base of all tables in ``config_base.py``
(only to keep each module short).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from replicator._native import ChunkerParams
from replicator.config_base import Strict as _Strict
from replicator.config_base import not_blank as _not_blank
from replicator.config_kafka import KafkaSettings as KafkaSettings  # noqa: PLC0414 - re-exported
from replicator.errors import ConfigError


class FsSourceSettings(_Strict):
    type: Literal["fs"] = "fs"
    path: Path = Field(description="Directory tree whose files are replicated.")
    bucket: str = Field("local", description="Name recorded as the bucket in manifests.")
    settle_seconds: float = Field(
        2.0, gt=0, le=3600, description="A file not closed is replicated once unchanged this long."
    )
    ignore: list[str] = Field(
        ["*.tmp", ".*", "*.partial", "*~"],
        description="fnmatch patterns of names (any path segment) the watcher never replicates.",
    )

    _blank = field_validator("path", "bucket", mode="before")(_not_blank)


class S3SourceSettings(_Strict):
    type: Literal["s3"]
    bucket: str = Field(description="Source bucket.")
    prefix: str = Field("", description="Only keys under this prefix.")

    _blank = field_validator("bucket", mode="before")(_not_blank)


SourceSettings = Annotated[FsSourceSettings | S3SourceSettings, Field(discriminator="type")]


class S3EndpointSettings(_Strict):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; AWS when unset.")
    region: str = Field("us-east-1", description="Signing region.")
    addressing_style: Literal["auto", "path", "virtual"] = Field("auto")
    ca_bundle: Path | None = Field(None, description="CA bundle for TLS verification.")


class S3OriginSettings(S3EndpointSettings):
    type: Literal["s3"] = "s3"
    read_size: int = Field(
        8 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes per ranged GET; two such windows are in memory per object.",
    )


#: The RPO the alert rules compare each peer's measured RPO with.
RpoTarget = Annotated[float, Field(gt=0, description="RPO target of this peer, in seconds.")]


class FsDestinationSettings(_Strict):
    name: str = Field(description="Peer name, used in metrics and commands.")
    rpo_target_seconds: RpoTarget = 300.0
    type: Literal["fs"] = "fs"
    path: Path = Field(description="Root directory of the replica store.")

    _blank = field_validator("name", "path", mode="before")(_not_blank)


class S3DestinationSettings(S3EndpointSettings):
    name: str = Field(description="Peer name, used in metrics and commands.")
    rpo_target_seconds: RpoTarget = 300.0
    type: Literal["s3"]
    bucket: str = Field(description="Bucket holding the replica store.")
    prefix: str = Field("", description="Key prefix of the replica store inside the bucket.")
    # A dead or hung endpoint fails after max_attempts * timeout, seconds not minutes.
    connect_timeout: float = Field(
        5.0, gt=0, le=600, description="Seconds to wait for a TCP/TLS connection."
    )
    read_timeout: float = Field(
        10.0, gt=0, le=3600, description="Seconds to wait for the server's next bytes."
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per request (timeouts, 5xx) before the peer fails."
    )

    _blank = field_validator("name", "bucket", mode="before")(_not_blank)


DestinationSettings = Annotated[
    FsDestinationSettings | S3DestinationSettings, Field(discriminator="type")
]


class ChunkingSettings(_Strict):
    min_size: int = Field(16384, description="FastCDC minimum chunk size (bytes, even).")
    avg_size: int = Field(65536, description="FastCDC average chunk size (bytes, even).")
    max_size: int = Field(262144, description="FastCDC maximum chunk size (bytes, even).")
    normalization: int = Field(1, ge=0, le=3, description="FastCDC normalization level.")
    seed: int = Field(0, ge=0, lt=2**64, description="Gear table seed.")

    @model_validator(mode="after")
    def _native_check(self) -> ChunkingSettings:
        self.params()  # raises ValueError naming the parameter
        return self

    def params(self) -> ChunkerParams:
        return ChunkerParams(
            self.min_size, self.avg_size, self.max_size, self.normalization, self.seed
        )


class StoreSettings(_Strict):
    pack_size: int = Field(
        16 * 1024 * 1024, ge=1024 * 1024, le=1024**3, description="Target pack size in bytes."
    )
    compression: Literal["none", "zstd"] = Field("none", description="Per-chunk compression.")
    concurrency: int = Field(4, ge=1, le=256, description="Objects processed at once.")
    cache_dir: Path | None = Field(
        None, description="Local index cache; default ~/.cache/replicator."
    )
    max_pack_delay: float = Field(
        0.5, gt=0, le=60, description="Seconds a waiting change may sit in an open pack."
    )
    format_version: Literal[2, 3] = Field(
        2,
        description=(
            "Store format of peers created from now on: 3 keeps the manifests of many keys "
            "in segments (docs/store-format.md §13); a peer keeps the format it was created with."
        ),
    )
    max_delete_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "Refuse a run that would tombstone more than this share of a peer's live keys "
            "(any key when the source lists nothing), unless --allow-deletes is given."
        ),
    )

    @field_validator("compression")
    @classmethod
    def _zstd_installed(cls, value: str) -> str:
        if value == "zstd" and importlib.util.find_spec("zstandard") is None:
            raise ValueError(
                "'zstd' needs the zstandard package, a dependency of replicator: "
                "reinstall replicator or run `pip install zstandard`"
            )
        return value


#: Where the heartbeat canary lives under the source (directory or bucket
#: prefix). Not under a dot directory: the directory watcher's default
#: ignore patterns (``.*``) would never replicate it.
HEARTBEAT_KEY = "_replicator/heartbeat"


#: Default ``service.max_in_flight`` per source (see Settings.small_in_flight).
FS_SMALL_IN_FLIGHT, S3_SMALL_IN_FLIGHT = 8, 32


class ServiceSettings(_Strict):
    """The daemon (``replicator run``)."""

    metrics_address: str = Field("127.0.0.1:9464", description="host:port of /metrics.")
    drain_timeout_seconds: float = Field(
        30.0, ge=0, le=3600, description="On SIGTERM, time to finish what is in flight."
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Small objects being read at once [default: 8 for a directory source, "
        "32 for an S3 source, whose reads wait on the network].",
    )
    large_object_size: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Objects of at least this many bytes are large: own workers and packs.",
    )
    max_large_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        description="Large objects being read at once (two read windows each).",
    )
    max_pending: int = Field(
        100_000, ge=1, description="Changes held per peer before the source is paused."
    )
    retry_max_seconds: float = Field(
        30.0, gt=0, le=3600, description="Cap of the backoff between retries of a failing peer."
    )
    # Off by default: the beat writes into the source, which a least-privilege
    # (read-only) source credential does not allow (docs/install.md).
    heartbeat_interval_seconds: float = Field(
        0.0,
        ge=0,
        le=86400,
        description="Write the heartbeat canary into the source this often; 0 disables it.",
    )
    heartbeat_key: str = Field(
        HEARTBEAT_KEY, description="Key of the heartbeat canary under the source."
    )

    @field_validator("heartbeat_key")
    @classmethod
    def _relative_key(cls, value: str) -> str:
        parts = value.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{value!r} must be a relative key: no empty, '.' or '..' segment")
        return value


class Settings(_Strict):
    source: SourceSettings
    origin: S3OriginSettings | None = None
    destinations: list[DestinationSettings] = Field(min_length=1)
    chunking: ChunkingSettings = ChunkingSettings()
    store: StoreSettings = StoreSettings()
    service: ServiceSettings = ServiceSettings()
    kafka: KafkaSettings | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
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
        return self

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


#: Allowed values of each discriminated ``type`` key, for the message.
_TYPES = "'fs' or 's3'"


def _message(err: dict[str, object]) -> str:
    """pydantic's message, reworded where it speaks pydantic, not TOML."""
    if err["type"] == "union_tag_not_found":
        return f"'type' is missing: set type = {_TYPES}"
    if err["type"] == "union_tag_invalid":
        ctx = err.get("ctx")
        tag = ctx.get("tag") if isinstance(ctx, dict) else None
        return f"type = {tag!r} is not allowed: use {_TYPES}"
    return str(err["msg"]).removeprefix("Value error, ")


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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
    except ValidationError as exc:
        msgs = []
        for err in exc.errors():
            # Discriminated unions add the tag ('fs'/'s3') to the location.
            loc = tuple(p for p in err["loc"] if p not in ("fs", "s3"))
            msgs.append(f"{path}: {_where(loc)}: {_message(dict(err))}")
        raise ConfigError("\n".join(msgs)) from None
