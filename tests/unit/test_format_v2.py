"""Store format v2: version names in version order, new identity fields,
and version-1 stores and manifests still read exactly."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from replicator._native import ChunkerParams
from replicator.events import sequencer_key
from replicator.store.format import (
    FORMAT_VERSION,
    ChunkRef,
    Manifest,
    PackRun,
    SourceIdentity,
    StoreConfig,
)
from replicator.store.versions import version_order

PARAMS = ChunkerParams(256, 1024, 4096, 1, 7)
T = 1_700_000_000_000_000_000


def order(name: str) -> tuple[int, int, str, int, str]:
    o = version_order(name)
    assert o is not None, name
    return o


def ident(t: int = T, seq: str = "", observed: int = 0, etag: str = '"e"') -> SourceIdentity:
    return SourceIdentity("s3", "b", "k", "", etag, 3, t, seq, observed=observed)


# A v1 manifest exactly as version 1 of replicator wrote it (docs example shape).
V1_MANIFEST = (
    b'{"chunker":[256,1024,4096,1,7],"digest":"' + b"05" * 32 + b'","kind":"created",'
    b'"object":{"bucket":"b","etag":"\\"e\\"","event_time":"2023-11-14T22:13:20Z",'
    b'"event_time_ns":1700000000000000000,"key":"k","sequencer":"","size":3,'
    b'"source":"s3","version_id":""},"runs":[{"chunks":[["' + b"02" * 32 + b'",3]],'
    b'"offset":0,"pack":"' + b"01" * 32 + b'"}],"version":1}'
)


def test_a_version_1_manifest_reads_and_keeps_its_name_and_bytes() -> None:
    m = Manifest.from_bytes(V1_MANIFEST)
    assert m.format_version == 1 and m.identity.mtime_ns is None
    assert m.to_bytes() == V1_MANIFEST, "re-serialised v1 manifests are byte-identical"
    name = m.version_name
    assert len(name) == 20 + 1 + 24 and name.startswith(f"{T:020d}-")
    assert version_order(name) is not None


def test_a_version_1_store_config_is_accepted_and_kept() -> None:
    cfg = StoreConfig(PARAMS)
    v1 = json.loads(cfg.to_bytes()) | {"version": 1}
    found = StoreConfig.from_bytes(json.dumps(v1).encode())
    assert found.version == 1 and found.chunker == PARAMS
    assert json.loads(cfg.to_bytes())["version"] == FORMAT_VERSION == 2


def test_v2_manifest_records_mtime_inode_observed_and_round_trips() -> None:
    i = SourceIdentity("fs", "local", "f", "", "d" * 64, 3, T + 5, mtime_ns=T - 99, inode=42)
    run = PackRun(b"\x01" * 32, 0, (ChunkRef(b"\x02" * 32, 3, 3),))
    m = Manifest(i, False, b"\x05" * 32, PARAMS, (run,))
    d = json.loads(m.to_bytes())
    assert d["version"] == 2
    assert (d["object"]["mtime_ns"], d["object"]["inode"], d["object"]["observed"]) == (
        T - 99,
        42,
        0,
    )
    back = Manifest.from_bytes(m.to_bytes())
    assert back == m and back.version_name == m.version_name
    other = SourceIdentity("fs", "local", "f", "", "d" * 64, 3, T + 5, mtime_ns=T - 98, inode=42)
    assert other.version_name(False) != i.version_name(False), "the mtime is part of the identity"


def test_versions_in_one_second_sort_by_sequencer_then_observation() -> None:
    # Sequencers of different lengths compare after left-padding with zeros.
    seqs = ["9", "0A", "00FF", "1000", "0001A2B3C4D5E6F70"]
    by_seq = [ident(seq=s, etag=f'"{n}"') for n, s in enumerate(seqs)]
    by_obs = [ident(observed=n, etag=f'"o{n}"') for n in (0, 1, 2, 10, 11)]
    later = ident(t=T + 1, etag='"later"')
    for group in (by_seq, by_obs):
        expected = [g.version_name(False) for g in group] + [later.version_name(False)]
        shuffled = expected[:]
        random.Random(3).shuffle(shuffled)
        assert sorted(shuffled) == expected, "byte order of names is version order"
        assert sorted(shuffled, key=order) == expected
    assert [sequencer_key(s) for s in seqs] == sorted(sequencer_key(s) for s in seqs)


@given(
    st.integers(0, 10**19),
    st.integers(0, 10**19),
    st.text("0123456789ABCDEF", max_size=20),
    st.text("0123456789ABCDEF", max_size=20),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_name_order_is_the_event_order(
    t1: int, t2: int, s1: str, s2: str, o1: int, o2: int
) -> None:
    a, b = ident(t1, s1, o1, '"a"'), ident(t2, s2, o2, '"b"')
    ka, kb = (t1, sequencer_key(s1), o1), (t2, sequencer_key(s2), o2)
    if ka != kb:
        assert (a.version_name(False) < b.version_name(True)) == (ka < kb)


def test_v1_and_v2_names_of_one_key_order_by_time() -> None:
    v1 = Manifest.from_bytes(V1_MANIFEST).version_name
    v2_later = ident(t=T + 1).version_name(False)
    v2_earlier = ident(t=T - 1).version_name(False)
    names = sorted([v2_later, v1, v2_earlier], key=order)
    assert names == [v2_earlier, v1, v2_later]
    assert version_order("not-a-version") is None
    assert version_order(f"{T:020d}-005ABC-{0:020d}-" + "0" * 24) is None  # length lies


def test_an_unorderable_sequencer_stays_in_the_body_not_the_name() -> None:
    weird = ident(seq="a/b c")
    name = weird.version_name(False)
    assert name.startswith(f"{T:020d}-000-") and "/" not in name
    assert (
        Manifest.from_bytes(
            Manifest(weird, True, b"\x00" * 32, PARAMS).to_bytes()
        ).identity.sequencer
        == "a/b c"
    )
