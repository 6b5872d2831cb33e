"""The demo's synthetic training job on its own: what it writes is a valid
safetensors layout, frozen tensors stay byte-identical between saves while
trained ones and the step counter change, saves go through a temporary
name, old checkpoints are deleted, and every version's copy is kept under
the file's ctime."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

from replicator.demo.job import FROZEN, LATEST, SHARD, TRAINED, TrainingJob, load_log

DTYPE_SIZE = {"F16": 2, "F32": 4, "I64": 8}


def parse_safetensors(data: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """An independent reader of the layout: (metadata, tensor name -> bytes)."""
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    metadata = header.pop("__metadata__")
    tensors, end = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        assert begin == end  # contiguous, no gap, no overlap
        count = 1
        for d in info["shape"]:
            count *= d
        assert stop - begin == count * DTYPE_SIZE[info["dtype"]], name
        tensors[name] = body[begin:stop]
        end = stop
    assert end == len(body)
    return metadata, tensors


def test_checkpoints_are_safetensors_with_frozen_and_trained_tensors(tmp_path: Path) -> None:
    job = TrainingJob(tmp_path / "src", tmp_path / "kept")
    job.save_checkpoint()
    first = (tmp_path / "src" / LATEST).read_bytes()
    job.save_checkpoint()
    second = (tmp_path / "src" / LATEST).read_bytes()
    meta1, t1 = parse_safetensors(first)
    meta2, t2 = parse_safetensors(second)
    assert (meta1["step"], meta2["step"]) == ("100", "200")
    assert struct.unpack("<q", t2["step"]) == (200,)
    for name, *_ in FROZEN:
        assert t1[name] == t2[name]
    for name, *_ in TRAINED:
        assert t1[name] != t2[name]
    step_copy = tmp_path / "src" / "checkpoints" / "step-000200" / "model.safetensors"
    assert step_copy.read_bytes() == second
    assert not list((tmp_path / "src").rglob("*.tmp"))  # saved temp-then-rename


def test_old_checkpoints_are_deleted_and_every_version_kept(tmp_path: Path) -> None:
    job = TrainingJob(tmp_path / "src", tmp_path / "kept", save_every=0.0, keep_last=2)
    for _ in range(4):
        job.save_checkpoint()
        job.append_records()
    steps = sorted(p.name for p in (tmp_path / "src" / "checkpoints").iterdir() if p.is_dir())
    assert steps == ["step-000300", "step-000400"]
    job.save_log(tmp_path / "versions.jsonl")
    versions = load_log(tmp_path / "versions.jsonl")
    assert versions == job.versions
    removed = {v.key for v in versions if v.removed}
    assert removed == {
        f"checkpoints/step-{s:06d}/{name}"
        for s in (100, 200)
        for name in ("model.safetensors", "trainer_state.json")
    }
    shard = [v for v in versions if v.key == SHARD]
    assert len(shard) == 4
    assert [v.size for v in shard] == sorted(v.size for v in shard)  # appended
    last = shard[-1]
    assert last.kept is not None
    assert last.kept.read_bytes() == (tmp_path / "src" / SHARD).read_bytes()
    assert last.event_time_ns == os.stat(tmp_path / "src" / SHARD).st_ctime_ns
    assert sum(v.size for v in versions) == job.bytes_written


def test_run_stops_on_request(tmp_path: Path) -> None:
    job = TrainingJob(tmp_path / "src", tmp_path / "kept")
    stop = threading.Event()
    stop.set()
    job.run(60.0, stop)
    assert job.step == 100  # only the final save
