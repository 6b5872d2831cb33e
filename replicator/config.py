"""The configuration tree: validated once at start, unknown keys rejected.

Loaded from TOML (``--config FILE``, else ``$REPLICATOR_CONFIG``, else
``./replicator.toml``). A bad file gets one message naming the key and
exit code 2 (ConfigError). Credentials never live here: they come from the
standard AWS chain (env vars, shared config/credentials files, instance
roles), so nothing secret is ever printed with the configuration.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from replicator._native import ChunkerParams
from replicator.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FsSource(_Strict):
    type: Literal["fs"] = "fs"
    path: Path = Field(description="Directory tree whose files are replicated.")
    bucket: str = Field("local", description="Name recorded as the bucket in manifests.")


class S3Source(_Strict):
    type: Literal["s3"]
    bucket: str = Field(description="Source bucket.")
    prefix: str = Field("", description="Only keys under this prefix.")


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


class S3Destination(S3Endpoint):
    name: str = Field(description="Peer name, used in metrics and commands.")
    type: Literal["s3"]
    bucket: str = Field(description="Bucket holding the replica store.")
    prefix: str = Field("", description="Key prefix of the replica store inside the bucket.")


Destination = Annotated[FsDestination | S3Destination, Field(discriminator="type")]


class KafkaSettings(_Strict):
    """The ``[kafka]`` table: S3 change events read from a consumer group.

    Secrets never live in this file: the SASL password and the TLS key
    password are read from a file or an environment variable named here."""

    bootstrap_servers: list[str] = Field(min_length=1, description="host:port of brokers.")
    topics: list[str] = Field(min_length=1, description="Topics carrying S3 notifications.")
    group_id: str = Field(min_length=1, description="Consumer group shared by every daemon.")
    dead_letter_topic: str = Field(min_length=1, description="Where unparseable messages go.")
    format: Literal["auto", "aws", "minio", "ceph"] = Field(
        "auto", description="Notification format; auto decides per record by eventSource."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a group without committed offsets starts; either way a start "
        "past the log start is reported as a gap.",
    )
    client_id: str = Field("replicator", description="Client id shown by the brokers.")
    max_in_flight: int = Field(
        1000, ge=1, description="Events handed out and not done before fetching pauses."
    )
    fetch_records: int = Field(200, ge=1, description="Records taken per fetch.")
    commit_interval_ms: int = Field(500, ge=10, description="How often watermarks are committed.")
    session_timeout_ms: int = Field(10000, ge=1000, description="Group session timeout.")
    heartbeat_interval_ms: int = Field(3000, ge=100, description="Group heartbeat period.")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="Group poll bound.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = Field(None, description="File holding the SASL password.")
    sasl_password_env: str | None = Field(None, description="Env var holding the SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA bundle verifying the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client key (mutual TLS).")
    ssl_key_password_env: str | None = Field(None, description="Env var of the key password.")
    ssl_check_hostname: bool = Field(True, description="Verify the broker's host name.")

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (self.sasl_mechanism is None or not self.sasl_username):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism and sasl_username")
        if sasl and (self.sasl_password_file is None) == (self.sasl_password_env is None):
            raise ValueError("give exactly one of sasl_password_file, sasl_password_env")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self

    def sasl_password(self) -> str | None:
        """Read the SASL password now (never stored in the settings)."""
        if self.sasl_password_file is not None:
            try:
                return self.sasl_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"kafka.sasl_password_file: cannot read {self.sasl_password_file}: "
                    f"{exc.strerror}"
                ) from None
        if self.sasl_password_env is not None:
            value = os.environ.get(self.sasl_password_env)
            if value is None:
                raise ConfigError(
                    f"kafka.sasl_password_env: environment variable {self.sasl_password_env} "
                    "is not set"
                )
            return value
        return None


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


class Settings(_Strict):
    source: Source
    origin: S3Origin | None = None
    destinations: list[Destination] = Field(min_length=1)
    chunking: Chunking = Chunking()
    store: Store = Store()
    kafka: KafkaSettings | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        names = [d.name for d in self.destinations]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"destination names must be unique, repeated: {sorted(dup)}")
        if isinstance(self.source, S3Source) and self.origin is None:
            raise ValueError("an s3 source needs an [origin] table (endpoint_url, region)")
        if self.kafka is not None and not isinstance(self.source, S3Source):
            raise ValueError("a [kafka] table needs an s3 source (the bucket its events name)")
        return self

    def destination(self, name: str) -> FsDestination | S3Destination:
        for d in self.destinations:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.destinations)
        raise ConfigError(f"no destination named {name!r} (configured: {known})")


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
            msgs.append(f"{path}: {_where(loc)}: {err['msg']}")
        raise ConfigError("\n".join(msgs)) from None
