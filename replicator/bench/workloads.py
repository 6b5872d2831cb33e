"""AI-like workloads with a known number of changed bytes, for ``bench delta``.

Each workload yields two versions of a small tree of files (``before`` and
``after``) and states how many bytes changed between them. Data is random
(incompressible) from a seeded generator, so results repeat run to run.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    name: str
    before: dict[str, bytes]
    after: dict[str, bytes]
    #: Bytes that differ between the versions (new or rewritten content).
    changed_bytes: int
    #: "contiguous" (changes, appends, inserts): target shipped <= 1.05 x changed.
    #: "small_edit": target shipped <= edits x (edit + 2 average-size chunks).
    kind: str
    edits: int = 1


def _rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def safetensors(tensors: dict[str, bytes], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file: u64 header length, JSON header, tensor data."""
    header: dict[str, object] = {}
    offset = 0
    for name, data in tensors.items():
        header[name] = {
            "dtype": "BF16",
            "shape": [len(data) // 2],
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + b"".join(tensors.values())


def _layers(rng: random.Random, count: int, size: int) -> dict[str, bytes]:
    return {f"model.layers.{i}.weight": _rand(rng, size) for i in range(count)}


def checkpoint_frozen(rng: random.Random, scale: int) -> Workload:
    """A checkpoint series: 3 of 16 layers train, the rest are frozen."""
    layers = _layers(rng, 16, scale // 16)
    before = safetensors(layers, {"step": "1000"})
    trained = dict(layers)
    for i in (3, 9, 14):
        trained[f"model.layers.{i}.weight"] = _rand(rng, scale // 16)
    after = safetensors(trained, {"step": "2000"})
    return Workload(
        "checkpoint_frozen_layers",
        {"ckpt.safetensors": before},
        {"ckpt.safetensors": after},
        3 * (scale // 16),
        "contiguous",
        3,
    )


def adapter_finetune(rng: random.Random, scale: int) -> Workload:
    """A frozen base model and a LoRA adapter saved again after more steps."""
    base = safetensors(_layers(rng, 8, scale // 8))
    adapter_size = max(scale // 64, 64 * 1024)
    lora_a = safetensors({"lora_A": _rand(rng, adapter_size)})
    lora_b = safetensors({"lora_A": _rand(rng, adapter_size)})
    files_a = {"base/model.safetensors": base, "adapter/adapter.safetensors": lora_a}
    files_b = {"base/model.safetensors": base, "adapter/adapter.safetensors": lora_b}
    return Workload("adapter_over_frozen_base", files_a, files_b, adapter_size, "contiguous")


def dataset_append(rng: random.Random, scale: int) -> Workload:
    """A jsonl-like shard that grows by appended records."""
    shard = _rand(rng, scale)
    extra = _rand(rng, scale // 8)
    return Workload(
        "dataset_shard_append",
        {"data/shard-0000.jsonl": shard},
        {"data/shard-0000.jsonl": shard + extra},
        len(extra),
        "contiguous",
    )


def middle_insert(rng: random.Random, scale: int) -> Workload:
    """A file with an eighth of its size inserted in the middle."""
    data = _rand(rng, scale)
    ins = _rand(rng, scale // 8)
    mid = scale // 2 + 12345
    return Workload(
        "insert_in_middle",
        {"blob.bin": data},
        {"blob.bin": data[:mid] + ins + data[mid:]},
        len(ins),
        "contiguous",
    )


def scattered_edits(rng: random.Random, scale: int) -> Workload:
    """Eight 100-byte edits at random places."""
    return _scattered(rng, scale, edits=8, size=100)


def _scattered(rng: random.Random, scale: int, edits: int, size: int) -> Workload:
    before = _rand(rng, scale)
    after = bytearray(before)
    step = scale // edits
    for i in range(edits):
        at = i * step + rng.randrange(step - size)
        after[at : at + size] = _rand(rng, size)
    return Workload(
        "scattered_small_edits",
        {"blob.bin": before},
        {"blob.bin": bytes(after)},
        edits * size,
        "small_edit",
        edits,
    )


def header_shift(rng: random.Random, scale: int) -> Workload:
    """Metadata added to a safetensors header shifts every tensor's offset."""
    layers = _layers(rng, 8, scale // 8)
    before = safetensors(layers)
    after = safetensors(layers, {"format": "pt", "note": "x" * 300})
    # Only the header differs; everything after it is the same bytes, moved.
    header_len = len(after) - sum(len(v) for v in layers.values())
    return Workload(
        "header_change_shifts_offsets",
        {"model.safetensors": before},
        {"model.safetensors": after},
        header_len,
        "small_edit",
    )


WORKLOADS: tuple[Callable[[random.Random, int], Workload], ...] = (
    checkpoint_frozen,
    adapter_finetune,
    dataset_append,
    middle_insert,
    scattered_edits,
    header_shift,
)


def generate(scale: int = 64 * MiB, seed: int = 7) -> list[Workload]:
    """Every workload, each about ``scale`` bytes."""
    return [make(random.Random(seed + i), scale) for i, make in enumerate(WORKLOADS)]
