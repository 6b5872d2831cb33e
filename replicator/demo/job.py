"""A synthetic training job: what a trainer does to a checkpoint directory.

Every ``save_every`` seconds it saves a checkpoint in the safetensors layout
(8-byte little-endian header length, JSON header, tensor bytes) the way
trainers save: write a temporary file, then rename it into place. Frozen
tensors (embedding, a frozen encoder layer) never change; trained tensors (a
head, LoRA adapters) change entirely at each save; a step counter tensor and
the header metadata change too. Each save writes ``step-N/model.safetensors``
and ``step-N/trainer_state.json`` and replaces ``latest.safetensors``; older
step directories beyond ``keep_last`` are deleted. Every second a batch of
records is appended to a JSONL dataset shard.

The job keeps a copy of every version it made visible (``kept/``), named by
the file's ctime after the write: the event time the daemon records for
that version (DESIGN.md invariant 6), so the checker can pair each restored
version with the bytes the job wrote.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: (name, dtype, shape, element size). Frozen first, as a model's layers.
FROZEN = [
    ("embed.weight", "F16", [2048, 1024], 2),
    ("encoder.0.weight", "F16", [1024, 512], 2),
]
TRAINED = [
    ("adapter.lora_A", "F32", [512, 64], 4),
    ("adapter.lora_B", "F32", [64, 512], 4),
    ("head.weight", "F32", [256, 512], 4),
]
#: (name, dtype, shape, bytes) as laid out in the file.
Tensor = tuple[str, str, list[int], bytes]
SHARD = "data/shard-00000.jsonl"
LATEST = "checkpoints/latest.safetensors"


@dataclass(frozen=True, slots=True)
class Version:
    """One version the job made visible (or one removal)."""

    key: str
    event_time_ns: int  # the file's ctime after the write; removal: wall clock
    size: int
    kept: Path | None  # the job's copy of the bytes; None for a removal

    @property
    def removed(self) -> bool:
        return self.kept is None


def safetensors(
    tensors: list[tuple[str, str, list[int], bytes]], metadata: dict[str, str]
) -> bytes:
    """The safetensors layout: u64 LE header size, JSON header, the data."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + b"".join(t[3] for t in tensors)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_log(path: Path) -> list[Version]:
    """The versions :meth:`TrainingJob.save_log` wrote."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, t, size, kept = json.loads(line)
        out.append(Version(key, t, size, None if kept is None else Path(kept)))
    return out


@dataclass
class TrainingJob:
    source: Path
    kept: Path
    seed: int = 0
    save_every: float = 5.0
    keep_last: int = 2
    versions: list[Version] = field(default_factory=list)
    bytes_written: int = 0
    step: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._frozen = [
            (name, dtype, shape, rng.randbytes(_numel(shape) * size))
            for name, dtype, shape, size in FROZEN
        ]
        self._shard = b""
        self._steps: list[int] = []

    def run(self, duration: float, stop: threading.Event) -> None:
        """Train for ``duration`` seconds (or until ``stop``), in this thread."""
        started = time.monotonic()
        next_save = started + 1.0
        while not stop.is_set():
            now = time.monotonic()
            if now - started >= duration:
                break
            self.append_records()
            if now >= next_save:
                self.save_checkpoint()
                next_save += self.save_every
            stop.wait(1.0)
        self.save_checkpoint()  # the final save, as a trainer does at the end

    def save_checkpoint(self) -> None:
        self.step += 100
        rng = random.Random(self.seed * 1_000_003 + self.step)
        trained = [
            (name, dtype, shape, rng.randbytes(_numel(shape) * size))
            for name, dtype, shape, size in TRAINED
        ]
        counter: Tensor = ("step", "I64", [], struct.pack("<q", self.step))
        data = safetensors(
            [*self._frozen, *trained, counter], {"format": "pt", "step": str(self.step)}
        )
        state = {"global_step": self.step, "loss": round(4.0 / (1 + self.step / 500), 6)}
        step_dir = f"checkpoints/step-{self.step:06d}"
        self.write_atomic(f"{step_dir}/model.safetensors", data)
        self.write_atomic(f"{step_dir}/trainer_state.json", json.dumps(state).encode())
        self.write_atomic(LATEST, data)
        self._steps.append(self.step)
        while len(self._steps) > self.keep_last:
            self.delete_step(self._steps.pop(0))

    def write_atomic(self, key: str, data: bytes) -> None:
        """Temp file, fsync, rename: what checkpoint savers do."""
        path = self.source / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._record(key, path, data)

    def append_records(self) -> None:
        rng = random.Random(self.seed * 7919 + len(self._shard))
        lines = b"".join(
            json.dumps(
                {"id": rng.getrandbits(48), "text": rng.randbytes(48).hex(), "step": self.step}
            ).encode()
            + b"\n"
            for _ in range(16)
        )
        path = self.source / SHARD
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(lines)
        self._shard += lines
        self._record(SHARD, path, self._shard)

    def delete_step(self, step: int) -> None:
        step_dir = self.source / f"checkpoints/step-{step:06d}"
        for name in ("model.safetensors", "trainer_state.json"):
            (step_dir / name).unlink()
            key = f"checkpoints/step-{step:06d}/{name}"
            with self._lock:
                self.versions.append(Version(key, time.time_ns(), 0, None))
        shutil.rmtree(step_dir)

    def _record(self, key: str, path: Path, data: bytes) -> None:
        ctime = os.stat(path).st_ctime_ns
        kept = self.kept / f"{key}@{ctime}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(data)
        with self._lock:
            self.versions.append(Version(key, ctime, len(data), kept))
            self.bytes_written += len(data)

    def save_log(self, path: Path) -> None:
        """Every version as one JSON line (kept for ``--keep`` and for tests)."""
        with self._lock, open(path, "w", encoding="utf-8") as f:
            for v in self.versions:
                kept = None if v.kept is None else str(v.kept)
                f.write(json.dumps([v.key, v.event_time_ns, v.size, kept]) + "\n")

    def progress(self) -> tuple[int, int, int]:
        """(step, versions written, bytes written), safe from another thread."""
        with self._lock:
            return self.step, len(self.versions), self.bytes_written
