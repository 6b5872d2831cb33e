"""aiokafka's DEBUG request log carries the SASL PLAIN credentials: redacted."""

from __future__ import annotations

import logging

import aiokafka.conn  # noqa: F401  (creates aiokafka's loggers)
import pytest

from replicator.config import KafkaSettings
from replicator.sources.kafka_clients import common_options


def test_sasl_request_and_known_secrets_are_redacted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "CANARY-unit-7f3a")
    settings = KafkaSettings.model_validate(
        {
            "bootstrap_servers": ["b:9092"],
            "topics": ["t"],
            "group_id": "g",
            "dead_letter_topic": "d",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password_env": "PW",
        }
    )
    assert common_options(settings)["sasl_plain_password"] == "CANARY-unit-7f3a"
    caplog.set_level(logging.DEBUG)
    conn = logging.getLogger("aiokafka.conn")
    conn.debug(
        "Request 3: %s",
        "SaslAuthenticateRequest_v1(sasl_auth_bytes=b'u\\x00u\\x00CANARY-unit-7f3a')",
    )
    logging.getLogger("aiokafka").debug("retrying with %s", "CANARY-unit-7f3a")
    conn.debug("Request 4: MetadataRequest_v1(topics=['t'])")
    assert "CANARY-unit-7f3a" not in caplog.text
    assert "sasl_auth_bytes=<redacted>" in caplog.text and "MetadataRequest_v1" in caplog.text
