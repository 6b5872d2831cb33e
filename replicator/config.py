"""The configuration tree: validated once at start, unknown keys rejected.

Loaded from TOML (``--config FILE``, else ``$REPLICATOR_CONFIG``, else
``./replicator.toml``). A bad file gets one message naming the key and
exit code 2 (ConfigError). Credentials never live here: they come from the
standard AWS chain (env vars, shared config/credentials files, instance
roles), so nothing secret is ever printed with the configuration.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from replicator._native import ChunkerParams
from replicator.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_blank(value: object) -> object:
    """Refuse an empty or all-blank string before it becomes Path('.')."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


class FsSource(_Strict):
    type: Literal["fs"] = "fs"
    path: Path = Field(description="Directory tree whose files are replicated.")
    bucket: str = Field("local", description="Name recorded as the bucket in manifests.")

    _blank = field_validator("path", "bucket", mode="before")(_not_blank)


class S3Source(_Strict):
    type: Literal["s3"]
    bucket: str = Field(description="Source bucket.")
    prefix: str = Field("", description="Only keys under this prefix.")

    _blank = field_validator("bucket", mode="before")(_not_blank)


Source = Annotated[FsSource | S3Source, Field(discriminator="type")]


class S3Endpoint(_Strict):
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; AWS when unset.")
    region: str = Field("us-east-1", description="Signing region.")
    addressing_style: Literal["auto", "path", "virtual"] = Field("auto")
    ca_bundle: Path | None = Field(None, description="CA bundle for TLS verification.")


class S3Origin(S3Endpoint):
    type: Literal["s3"] = "s3"
    read_size: int = Field(
        8 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes per ranged GET; two such windows are in memory per object.",
    )


class FsDestination(_Strict):
    name: str = Field(description="Peer name, used in metrics and commands.")
    type: Literal["fs"] = "fs"
    path: Path = Field(description="Root directory of the replica store.")

    _blank = field_validator("name", "path", mode="before")(_not_blank)


class S3Destination(S3Endpoint):
    name: str = Field(description="Peer name, used in metrics and commands.")
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


Destination = Annotated[FsDestination | S3Destination, Field(discriminator="type")]


class Chunking(_Strict):
    min_size: int = Field(16384, description="FastCDC minimum chunk size (bytes, even).")
    avg_size: int = Field(65536, description="FastCDC average chunk size (bytes, even).")
    max_size: int = Field(262144, description="FastCDC maximum chunk size (bytes, even).")
    normalization: int = Field(1, ge=0, le=3, description="FastCDC normalization level.")
    seed: int = Field(0, ge=0, lt=2**64, description="Gear table seed.")

    @model_validator(mode="after")
    def _native_check(self) -> Chunking:
        self.params()  # raises ValueError naming the parameter
        return self

    def params(self) -> ChunkerParams:
        return ChunkerParams(
            self.min_size, self.avg_size, self.max_size, self.normalization, self.seed
        )


class Store(_Strict):
    pack_size: int = Field(
        16 * 1024 * 1024, ge=1024 * 1024, le=1024**3, description="Target pack size in bytes."
    )
    compression: Literal["none", "zstd"] = Field("none", description="Per-chunk compression.")
    concurrency: int = Field(4, ge=1, le=256, description="Objects processed at once.")
    cache_dir: Path | None = Field(
        None, description="Local index cache; default ~/.cache/replicator."
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


class Settings(_Strict):
    source: Source
    origin: S3Origin | None = None
    destinations: list[Destination] = Field(min_length=1)
    chunking: Chunking = Chunking()
    store: Store = Store()

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        names = [d.name for d in self.destinations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"destination names must be unique, repeated: {sorted(dup)}")
        if isinstance(self.source, S3Source) and self.origin is None:
            raise ValueError("an s3 source needs an [origin] table (endpoint_url, region)")
        check_places(self)
        return self

    def destination(self, name: str) -> FsDestination | S3Destination:
        for d in self.destinations:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.destinations)
        raise ConfigError(f"no destination named {name!r} (configured: {known})")


def _place(where: FsSource | S3Source | FsDestination | S3Destination, endpoint: str) -> str:
    """Where a source or destination keeps its data, as a comparable path:
    ``fs:/abs/path/`` or ``s3:<endpoint>/<bucket>/<prefix>/``."""
    if isinstance(where, FsSource | FsDestination):
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
        here = _place(d, (d.endpoint_url if isinstance(d, S3Destination) else None) or "aws")
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
