"""The ``[kafka]`` table (``replicator.config`` re-exports it): where the
daemon reads S3 change events from, and how it authenticates. Secrets are
named here, never stored: they are read when the client is built."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from replicator.errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are refused, values never change once read (as every
    table of ``config_base``; this one stays a pydantic model, loaded only
    for a ``[kafka]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(Strict):
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
