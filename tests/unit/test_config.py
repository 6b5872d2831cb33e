"""The configuration tables (``replicator.config``): each mistake is one line
naming its key, in pydantic's words (the tables were pydantic models; the
messages below are what those models printed), and the tables behave as the
models did for the code that builds them (keywords, defaults, frozen, copies).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import (
    ChunkingSettings,
    FsDestinationSettings,
    FsSourceSettings,
    S3DestinationSettings,
    Settings,
    StoreSettings,
    load,
)
from replicator.config_base import Invalid
from replicator.errors import ConfigError

SRC = '[source]\ntype = "fs"\npath = "/tmp/cfg-test/src"\n'
DEST = '[[destinations]]\nname = "a"\ntype = "fs"\npath = "/tmp/cfg-test/a"\n'
S3_SRC = '[source]\ntype = "s3"\nbucket = "b"\n[origin]\nregion = "x"\n'

#: Document → the lines of the message after ``<file>: ``.
MISTAKES = {
    SRC: ["destinations: Field required"],
    DEST: ["source: Field required"],
    '[source]\npath = "/x"\n' + DEST: ["source: 'type' is missing: set type = 'fs' or 's3'"],
    '[source]\ntype = "gcs"\n' + DEST: ["source: type = 'gcs' is not allowed: use 'fs' or 's3'"],
    "source = 3\n" + DEST: [
        "source: Input should be a valid dictionary or object to extract fields from"
    ],
    SRC + "bogus = 1\n" + DEST: ["source.bogus: Extra inputs are not permitted"],
    SRC + "settle_seconds = 0\n" + DEST: ["source.settle_seconds: Input should be greater than 0"],
    SRC + "settle_seconds = 4000\n" + DEST: [
        "source.settle_seconds: Input should be less than or equal to 3600"
    ],
    SRC + 'settle_seconds = "x"\n' + DEST: [
        "source.settle_seconds: Input should be a valid number, unable to parse string as a number"
    ],
    SRC + 'ignore = "x"\n' + DEST: ["source.ignore: Input should be a valid list"],
    SRC + 'ignore = ["a", 3]\n' + DEST: ["source.ignore[1]: Input should be a valid string"],
    '[source]\ntype = "fs"\npath = 3\n' + DEST: [
        "source.path: Input is not a valid path for <class 'pathlib.Path'>"
    ],
    '[source]\ntype = "fs"\npath = " "\n' + DEST: ["source.path: must not be empty"],
    SRC + '[[destinations]]\ntype = "fs"\npath = "/tmp/cfg-test/a"\n': [
        "destinations[0].name: Field required"
    ],
    SRC + DEST + DEST.replace("/a", "/c"): [
        "(top level): destination names must be unique, repeated: ['a']"
    ],
    '[source]\ntype = "s3"\nbucket = "b"\n' + DEST: [
        "(top level): an s3 source needs an [origin] table (endpoint_url, region)"
    ],
    '[source]\ntype = "s3"\nbucket = "b"\n[origin]\naddressing_style = "x"\nread_size = 5\n'
    + DEST: [
        "origin.addressing_style: Input should be 'auto', 'path' or 'virtual'",
        "origin.read_size: Input should be greater than or equal to 1048576",
    ],
    SRC + DEST + '[store]\ncompression = "lz4"\nconcurrency = 0\npack_size = 1.5\n': [
        "store.pack_size: Input should be a valid integer, got a number with a fractional part",
        "store.compression: Input should be 'none' or 'zstd'",
        "store.concurrency: Input should be greater than or equal to 1",
    ],
    SRC + DEST + '[store]\nformat_version = "3"\n': [
        "store.format_version: Input should be 2 or 3"
    ],
    SRC + DEST + "[store]\nformat_version = true\n": [
        "store.format_version: Input should be 2 or 3"
    ],
    SRC + DEST + '[store]\nconcurrency = "seven"\n': [
        "store.concurrency: Input should be a valid integer, unable to parse string as an integer"
    ],
    SRC + DEST + "[chunking]\nmin_size = 1\navg_size = 2\nmax_size = 3\n": [
        "chunking: min_size must be between 64 and 1048576, got 1"
    ],
    SRC + DEST + "[chunking]\nseed = -1\n": [
        "chunking.seed: Input should be greater than or equal to 0"
    ],
    SRC + DEST + '[service]\nmax_in_flight = 0\nbogus = 1\nheartbeat_key = "../x"\n': [
        "service.max_in_flight: Input should be greater than or equal to 1",
        "service.heartbeat_key: '../x' must be a relative key: no empty, '.' or '..' segment",
        "service.bogus: Extra inputs are not permitted",
    ],
    SRC + DEST + '[service]\nheartbeat_key = "_r/.beat"\n': [
        "(top level): service.heartbeat_key '_r/.beat': segment '.beat' matches source.ignore "
        "pattern '.*', so it would never be replicated"
    ],
    SRC + '[[destinations]]\nname = "b"\ntype = "s3"\nbucket = ""\nmax_attempts = 0\n': [
        "destinations[0].bucket: must not be empty",
        "destinations[0].max_attempts: Input should be greater than or equal to 1",
    ],
    '[source]\ntype = "fs"\npath = "/tmp/cfg-test/a"\n' + DEST: [
        "(top level): destination 'a' (fs:/tmp/cfg-test/a/) is the same place as the source "
        "(fs:/tmp/cfg-test/a/)"
    ],
    S3_SRC + '[kafka]\nbootstrap_servers = []\ntopics = ["t"]\nformat = "gcs"\n' + DEST: [
        "kafka.bootstrap_servers: List should have at least 1 item after validation, not 0",
        "kafka.group_id: Field required",
        "kafka.dead_letter_topic: Field required",
        "kafka.format: Input should be 'auto', 'aws', 'minio' or 'ceph'",
    ],
    SRC + '[kafka]\nbootstrap_servers = ["a:1"]\ntopics = ["t"]\ngroup_id = "g"\n'
    'dead_letter_topic = "d"\n' + DEST: [
        "(top level): a [kafka] table needs an s3 source (the bucket its events name)"
    ],
}


@pytest.mark.parametrize("text", list(MISTAKES), ids=range(len(MISTAKES)))
def test_each_mistake_is_named_in_pydantics_words(tmp_path: Path, text: str) -> None:
    path = tmp_path / "replicator.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.exit_code == 2
    assert str(err.value).splitlines() == [f"{path}: {line}" for line in MISTAKES[text]]


def test_lax_values_are_read_as_pydantic_read_them(tmp_path: Path) -> None:
    path = tmp_path / "replicator.toml"
    path.write_text(SRC + DEST + '[store]\nconcurrency = 4.0\npack_size = "2097152"\n')
    store = load(path).store
    assert (store.concurrency, store.pack_size) == (4, 2 * 1024 * 1024)
    assert store.format_version == 3  # the default: new peers are format 3
    path.write_text(SRC + DEST + "[store]\nformat_version = 2.0\n")
    assert (lax := load(path).store.format_version) == 2 and type(lax) is int
    assert isinstance(store.max_pack_delay, float) and store.cache_dir is None


def test_tables_built_in_code_validate_and_stay_frozen(tmp_path: Path) -> None:
    store = StoreSettings(cache_dir=tmp_path, concurrency=2)
    assert store.cache_dir == tmp_path and store.pack_size == 16 * 1024 * 1024
    with pytest.raises(AttributeError):
        store.concurrency = 3  # type: ignore[misc]
    with pytest.raises(Invalid, match="concurrency: Input should be greater than or equal to 1"):
        StoreSettings(concurrency=0)
    with pytest.raises(Invalid, match="bogus: Extra inputs are not permitted"):
        StoreSettings(bogus=1)  # type: ignore[call-arg]
    assert store.model_copy(update={"concurrency": 5}).concurrency == 5
    assert store.concurrency == 2
    assert store == StoreSettings(cache_dir=tmp_path, concurrency=2) != StoreSettings()
    assert hash(store) == hash(StoreSettings(cache_dir=tmp_path, concurrency=2))


def test_nested_tables_take_instances_or_dicts(tmp_path: Path) -> None:
    settings = Settings(
        source=FsSourceSettings(path=tmp_path / "src"),
        destinations=[
            FsDestinationSettings(name="a", path=tmp_path / "a"),
            {"name": "b", "type": "s3", "bucket": "x"},  # type: ignore[list-item]
        ],
        chunking=ChunkingSettings(min_size=4096, avg_size=16384, max_size=65536),
    )
    assert isinstance(settings.destinations[1], S3DestinationSettings)
    assert settings.chunking.params().avg_size == 16384
    assert settings.store == StoreSettings() and settings.kafka is None
    # Defaults are never shared between tables: one list per table.
    other, source = FsSourceSettings(path=tmp_path), settings.source
    assert isinstance(source, FsSourceSettings)
    assert other.ignore == source.ignore and other.ignore is not source.ignore
    dumped = settings.model_dump()
    assert dumped["destinations"][1]["bucket"] == "x" and dumped["store"]["concurrency"] == 4
    assert Settings.model_validate(dumped) == settings
    assert set(Settings.model_fields) == set(dumped)
