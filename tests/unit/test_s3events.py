"""S3 notification parsers: AWS / MinIO / Ceph corpus, malformed corpus, fuzzing."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.events import Kind, Position
from replicator.sources.s3events import ParseError, decode_key, parse_message, parse_time_ns
from tests.kafka.corpus import (
    AWS_TEST_EVENT,
    MALFORMED,
    aws_message,
    aws_record,
    ceph_message,
    minio_message,
)

KEYS = [
    "plain.txt",
    "dir/sub dir/with space.bin",
    "a+b=c&d?.parquet",
    "100% done",
    "ünïcödé/日本語/🚀.safetensors",
    "tricky%2Fnot-a-slash",
    " leading and trailing ",
]
T0 = 1_796_032_801_123_000_000  # 2026-11-30T10:00:01.123Z


def test_aws_put_fields() -> None:
    msg = aws_message(
        aws_record(
            "bkt", "ckpt/step 10.pt", size=1234, etag="0123abc", version="v1", sequencer="0A"
        )
    )
    pos = Position("events", 3, 41)
    (ev,) = parse_message(msg, "aws", source="s3", position=pos).events
    assert (ev.bucket, ev.key, ev.kind, ev.size) == ("bkt", "ckpt/step 10.pt", Kind.CREATED, 1234)
    assert (ev.version_id, ev.etag, ev.sequencer) == ("v1", "0123abc", "0A")
    assert ev.event_time_ns == T0
    assert ev.position == pos and ev.source == "s3"


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("fmt", ["aws", "auto"])
def test_aws_keys_round_trip(key: str, fmt: Any) -> None:
    (ev,) = parse_message(aws_message(aws_record("b", key, size=1)), fmt).events
    assert ev.key == key


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("fmt", ["minio", "auto"])
def test_minio_envelope(key: str, fmt: Any) -> None:
    msg = minio_message("b", key, size=5, etag="e", version="3f1c", sequencer="187B9D2C3A7E51F0")
    (ev,) = parse_message(msg, fmt).events
    assert (ev.key, ev.size, ev.version_id, ev.kind) == (key, 5, "3f1c", Kind.CREATED)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("fmt", ["ceph", "auto"])
def test_ceph_raw_key_and_text_size(key: str, fmt: Any) -> None:
    (ev,) = parse_message(ceph_message("b", key, size="1024", etag="37b5"), fmt).events
    assert (ev.key, ev.size, ev.version_id, ev.etag) == (key, 1024, "", "37b5")
    assert ev.event_time_ns == 1_796_032_801_124_724_000  # microseconds kept


def test_ceph_numeric_size_and_lowercase_etag() -> None:
    doc = json.loads(ceph_message("b", "k", size=7))
    obj = doc["Records"][0]["s3"]["object"]
    obj["etag"] = obj.pop("eTag", "abc")
    (ev,) = parse_message(json.dumps(doc).encode(), "ceph").events
    assert (ev.size, ev.etag) == (7, "abc")


def test_multi_record_message_keeps_order() -> None:
    records = [aws_record("b", f"k{i}", size=i, sequencer=f"{i:02X}") for i in range(5)]
    events = parse_message(aws_message(*records)).events
    assert [e.key for e in events] == [f"k{i}" for i in range(5)]
    assert [e.size for e in events] == list(range(5))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ObjectCreated:Put", Kind.CREATED),
        ("ObjectCreated:CompleteMultipartUpload", Kind.CREATED),
        ("ObjectCreated:Copy", Kind.CREATED),
        ("ObjectRemoved:Delete", Kind.REMOVED),
        ("ObjectRemoved:DeleteMarkerCreated", Kind.REMOVED),
        ("LifecycleExpiration:Delete", Kind.REMOVED),
        ("s3:ObjectRemoved:Delete", Kind.REMOVED),
        ("ObjectLifecycle:Expiration:Current", Kind.REMOVED),
    ],
)
def test_event_families(name: str, kind: Kind) -> None:
    size = None if kind is Kind.REMOVED else 9  # removals carry no size
    (ev,) = parse_message(aws_message(aws_record("b", "k", name=name, size=size))).events
    assert ev.kind is kind and ev.size == (size or 0)


def test_delete_marker_has_version_and_no_size() -> None:
    record = aws_record(
        "b", "gone.bin", name="ObjectRemoved:DeleteMarkerCreated", size=None, version="dm1"
    )
    (ev,) = parse_message(aws_message(record)).events
    assert (ev.kind, ev.version_id, ev.size, ev.etag) == (Kind.REMOVED, "dm1", 0, "")


def test_test_event_and_harmless_names_are_skipped() -> None:
    assert parse_message(AWS_TEST_EVENT).skipped == 1
    assert parse_message(AWS_TEST_EVENT).events == ()
    harmless = ["ObjectTagging:Put", "s3:ObjectAccessed:Get", "ObjectRestore:Completed"]
    records = [aws_record("b", "k", name=n) for n in harmless] + [aws_record("b", "kept")]
    parsed = parse_message(aws_message(*records))
    assert parsed.skipped == 3 and [e.key for e in parsed.events] == ["kept"]


@pytest.mark.parametrize(("message", "gist"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_messages_name_the_reason(message: bytes, gist: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_message(message)
    assert gist in err.value.reason
    assert len(err.value.reason) < 400 and "\n" not in err.value.reason


def test_one_bad_record_rejects_the_whole_message() -> None:
    bad = aws_record("b", "k", time="not a time")
    with pytest.raises(ParseError, match=r"Records\[1\]\.eventTime"):
        parse_message(aws_message(aws_record("b", "ok"), bad))


def test_decode_key_rules() -> None:
    assert decode_key("a+b%2Bc%20d") == "a b+c d"
    assert decode_key("%E6%97%A5") == "日"
    for bad in ["%", "%4", "%G0", "%C3%28"]:
        with pytest.raises(ParseError):
            decode_key(bad)


def test_event_times() -> None:
    assert parse_time_ns("1970-01-01T00:00:00Z") == 0
    assert parse_time_ns("1970-01-01T00:00:00.000000001Z") == 1
    assert parse_time_ns("1970-01-01T01:00:00+01:00") == 0
    assert parse_time_ns("1970-01-01T00:00:00-00:30") == 1800 * 10**9
    for bad in ["0000-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-30 10:00:00Z", 5]:
        with pytest.raises(ParseError):
            parse_time_ns(bad)


@given(st.binary(max_size=2048))
def test_fuzz_bytes_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_message(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


def _mutate(record: dict[str, Any], path: list[str], value: object) -> dict[str, Any]:
    node: Any = record
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return record


FIELDS = [
    ["eventVersion"],
    ["eventName"],
    ["eventTime"],
    ["eventSource"],
    ["s3"],
    ["s3", "bucket"],
    ["s3", "bucket", "name"],
    ["s3", "object"],
    ["s3", "object", "key"],
    ["s3", "object", "size"],
    ["s3", "object", "eTag"],
    ["s3", "object", "versionId"],
    ["s3", "object", "sequencer"],
]


@given(
    path=st.sampled_from(FIELDS),
    value=json_values,
    fmt=st.sampled_from(["auto", "aws", "minio", "ceph"]),
)
def test_fuzz_wrong_types_in_real_records(path: list[str], value: object, fmt: Any) -> None:
    record = _mutate(aws_record("b", "k", size=3), path, value)
    try:
        parsed = parse_message(aws_message(record), fmt)
    except ParseError as exc:
        assert exc.reason
    else:
        for ev in parsed.events:
            assert isinstance(ev.key, str) and ev.size >= 0 and ev.bucket


@given(
    key=st.text(min_size=1, max_size=200).filter(
        lambda k: len(k.encode("utf-8", "replace")) <= 1024
    )
)
def test_fuzz_any_key_round_trips(key: str) -> None:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate is no S3 key
    (ev,) = parse_message(aws_message(aws_record("b", key, size=1))).events
    assert ev.key == key
    (ev,) = parse_message(ceph_message("b", key)).events
    assert ev.key == key
