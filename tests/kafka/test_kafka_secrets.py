"""Secrets: a SASL password given as a canary never shows in logs or dead letters.

The session broker has a SASL/PLAIN listener whose user's password is the
canary. Everything is logged at DEBUG (aiokafka's too) while the source
authenticates, consumes and dead-letters; then the canary is searched for in
the captured logs, the settings' dump and every dead letter's bytes and headers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from replicator.errors import SourceError
from replicator.sources import Outcome
from replicator.sources.kafka import KafkaSource
from tests.kafka.conftest import SASL_USER
from tests.kafka.corpus import MALFORMED, aws_message, aws_record
from tests.kafka.kafkautil import Topics, produce, read_all, running, take, wait_for

pytestmark = pytest.mark.integration


def sasl(topics: Topics, **secret: object) -> dict[str, object]:
    assert topics.broker.sasl_bootstrap is not None
    return {
        "bootstrap_servers": [topics.broker.sasl_bootstrap],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": SASL_USER,
        **secret,
    }


@pytest.mark.parametrize("via", ["file", "env"])
async def test_sasl_canary_never_leaks(
    topics: Topics,
    sasl_canary: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    if via == "file":
        secret_file = tmp_path / "sasl-password"
        secret_file.write_text(sasl_canary + "\n")
        settings = topics.settings(**sasl(topics, sasl_password_file=secret_file))
    else:
        monkeypatch.setenv("REPLICATOR_TEST_SASL", sasl_canary)
        settings = topics.settings(**sasl(topics, sasl_password_env="REPLICATOR_TEST_SASL"))
    bad = [m for m, _ in MALFORMED[:8]]
    await produce(topics.broker, topics.events, [*bad, aws_message(aws_record("b", "ok"))])
    async with running(KafkaSource(settings)) as source:
        (event,) = await take(source, 1)
        await source.done(event, Outcome.DURABLE)
        await wait_for(lambda: source.dead_letters == len(bad), "the dead letters")
    dead = await read_all(topics.broker, topics.dead_letters, len(bad))
    assert len(dead) == len(bad)
    blobs = [settings.model_dump_json(), repr(settings), caplog.text]
    blobs += [repr((r.key, r.value, r.headers)) for r in dead]
    assert not [b for b in blobs if sasl_canary in b]
    print(f"\nSASL via {via}: {len(caplog.records)} log records at DEBUG, {len(dead)} dead letters:"
          " canary absent")  # fmt: skip


async def test_wrong_sasl_password_fails_closed_without_echoing_it(
    topics: Topics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "CANARY-wrong-" + "x" * 12
    secret_file = tmp_path / "wrong"
    secret_file.write_text(wrong)
    source = KafkaSource(topics.settings(**sasl(topics, sasl_password_file=secret_file)))
    with pytest.raises(SourceError) as err:
        await source.start()
    assert "kafka.bootstrap_servers" in str(err.value)
    assert wrong not in str(err.value) and wrong not in caplog.text
    print(f"\nwrong password refused: {err.value}")
