"""The [kafka] table: validated at load, secrets only from files or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import KafkaSettings, load
from replicator.errors import ConfigError

BASE = """
[source]
type = "s3"
bucket = "training-data"

[origin]
endpoint_url = "http://127.0.0.1:9000"

[[destinations]]
name = "peer"
type = "fs"
path = "/tmp/peer"

[kafka]
bootstrap_servers = ["127.0.0.1:9092"]
topics = ["s3-events"]
group_id = "replicator"
dead_letter_topic = "s3-dead"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replicator.toml"
    path.write_text(text)
    return path


def test_minimal_table_and_safe_defaults(tmp_path: Path) -> None:
    kafka = load(write(tmp_path, BASE)).kafka
    assert kafka is not None
    assert kafka.auto_offset_reset == "earliest" and kafka.format == "auto"
    assert kafka.security_protocol == "PLAINTEXT" and kafka.sasl_password() is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('sasl_password = "hunter2"', "kafka.sasl_password: Extra inputs are not permitted"),
        ('format = "gcs"', "kafka.format"),
        ('auto_offset_reset = "none"', "kafka.auto_offset_reset"),
        ('security_protocol = "SASL_SSL"', "needs sasl_mechanism and sasl_username"),
        ("max_in_flight = 0", "kafka.max_in_flight"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, BASE + extra + "\n"))
    assert message in str(err.value)
    assert "hunter2" not in str(err.value)


def test_kafka_needs_an_s3_source(tmp_path: Path) -> None:
    text = BASE.replace(
        'type = "s3"\nbucket = "training-data"', f'type = "fs"\npath = "{tmp_path}"'
    )
    with pytest.raises(ConfigError, match="needs an s3 source"):
        load(write(tmp_path, text))


def sasl(**secret: object) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": ["b:9093"],
            "topics": ["t"],
            "group_id": "g",
            "dead_letter_topic": "d",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "replicator",
            **secret,
        }
    )


def test_sasl_password_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert sasl(sasl_password_file=secret).sasl_password() == "s3cret"
    monkeypatch.setenv("KAFKA_PW", "from-env")
    assert sasl(sasl_password_env="KAFKA_PW").sasl_password() == "from-env"
    assert "s3cret" not in repr(sasl(sasl_password_file=secret))


def test_sasl_password_problems_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        sasl()
    with pytest.raises(ValueError, match="exactly one of"):
        sasl(sasl_password_file=tmp_path / "a", sasl_password_env="B")
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_file: cannot read"):
        sasl(sasl_password_file=tmp_path / "missing").sasl_password()
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_env: .*NOPE is not set"):
        sasl(sasl_password_env="NOPE").sasl_password()
