"""``replicator heartbeat``: beats land in the source as new versions, and
their age at each peer is read from what the peer holds. A backfill carries
the beat to the peers here, standing in for the daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from replicator import config
from replicator.cli import main
from replicator.heartbeat import DEFAULT_KEY, BeatDenied, beat
from tests.deploy.metric_names import families
from tests.services.moto_server import MotoServer
from tests.services.seaweedfs.server import SeaweedServer

pytestmark = pytest.mark.integration


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _config(root: Path) -> Path:
    path = root / "replicator.toml"
    path.write_text(
        f'[source]\ntype = "fs"\npath = "{root / "source"}"\nbucket = "src"\n\n'
        f'[[destinations]]\nname = "dr-a"\ntype = "fs"\npath = "{root / "a"}"\n\n'
        f'[[destinations]]\nname = "dr-b"\ntype = "fs"\npath = "{root / "b"}"\n\n'
        f'[store]\ncache_dir = "{root / "cache"}"\n'
    )
    (root / "source").mkdir()
    return path


def _written(path: Path) -> tuple[float, float]:
    """When the beat at ``path`` was written, as the interval its mtime and
    ctime span (the event time a source records is one of the two; the
    rename after the write and fsync sets the ctime later)."""
    st = path.stat()
    times = (st.st_mtime_ns / 1e9, st.st_ctime_ns / 1e9)
    return min(times), max(times)


def _round(cfg: Path, *extra: str) -> dict[str, float | None]:
    code, out, err = _cli("heartbeat", "--config", str(cfg), "--once", "--json", *extra)
    assert code == 0, out + err
    ages: dict[str, float | None] = json.loads(out)["ages"]
    return ages


def test_age_follows_the_newest_durable_beat(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    code, out, err = _cli("backfill", "--config", str(cfg))  # creates both stores
    assert code == 0, out + err
    assert _round(cfg) == {"dr-a": None, "dr-b": None}  # beat 1 is not durable anywhere
    beat_file = tmp_path / "source" / DEFAULT_KEY
    first_from, first_to = _written(beat_file)

    code, out, err = _cli("backfill", "--config", str(cfg))  # carries beat 1 to both peers
    assert code == 0, out + err
    before = time.time()
    textfile = tmp_path / "heartbeat.prom"
    ages = _round(cfg, "--textfile", str(textfile))  # writes beat 2, not yet durable
    after = time.time()
    for peer in ("dr-a", "dr-b"):
        age = ages[peer]
        assert age is not None
        # The age is that of beat 1: bounded by the clock on both sides.
        assert before - first_to <= age <= after - first_from, (peer, age)
    print(f"heartbeat age after one backfill: {ages}")
    listed = {f.name for f in families() if "heartbeat" in f.exporter.split("|")}
    families_out = list(text_string_to_metric_families(textfile.read_text()))
    assert {f.name for f in families_out} <= listed
    exported = {s.labels["destination"]: s.value for f in families_out for s in f.samples}
    assert exported == pytest.approx(ages)

    second_from, _second_to = _written(beat_file)
    assert second_from > first_to  # a new version, not the same file
    code, out, err = _cli("backfill", "--config", str(cfg))
    assert code == 0, out + err
    newer = _round(cfg)
    assert all(newer[p] is not None for p in newer)
    assert newer["dr-a"] <= time.time() - second_from  # type: ignore[operator]


def test_operator_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    code, _out, err = _cli("heartbeat", "--config", str(cfg), "--once", "--textfile", "/nope/x")
    assert code == 2 and "--textfile /nope/x" in err
    code, _out, err = _cli("heartbeat", "--config", str(cfg), "--once")
    assert code == 2 and "not a replicator store" in err  # no backfill yet: no store
    assert "Traceback" not in err


async def test_beat_into_an_s3_source(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = moto_server.endpoint
    admin = endpoint.client()
    admin.create_bucket(Bucket="hb-src")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint.secret_access_key)
    settings = config.Settings.model_validate(
        {
            "source": {"type": "s3", "bucket": "hb-src", "prefix": "data/"},
            "origin": {"endpoint_url": endpoint.url, "addressing_style": "path"},
            "destinations": [{"name": "p", "type": "fs", "path": "/nonexistent"}],
        }
    )
    await beat(settings)
    await beat(settings)
    body = admin.get_object(Bucket="hb-src", Key="data/" + DEFAULT_KEY)["Body"].read()
    assert json.loads(body)["written_at"] == pytest.approx(time.time(), abs=60)


async def test_a_read_only_s3_credential_is_refused_as_denied(
    seaweed_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS enforces identities: its read-only one gets AccessDenied,
    which the daemon takes as "heartbeat disabled" (BeatDenied), not as a
    transient error to retry every period."""
    admin = seaweed_server.endpoint
    admin.client().create_bucket(Bucket="hb-ro")
    settings = config.Settings.model_validate(
        {
            "source": {"type": "s3", "bucket": "hb-ro"},
            "origin": {"endpoint_url": admin.url, "addressing_style": "path"},
            "destinations": [{"name": "p", "type": "fs", "path": "/nonexistent"}],
        }
    )
    for who, denied in ((seaweed_server.reader, True), (admin, False)):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", who.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", who.secret_access_key)
        if denied:
            with pytest.raises(BeatDenied, match=r"s3://hb-ro/_replicator/heartbeat.*AccessDenied"):
                await beat(settings)
        else:
            await beat(settings)
    listed = admin.client().list_objects_v2(Bucket="hb-ro")["Contents"]
    assert [o["Key"] for o in listed] == [DEFAULT_KEY]
