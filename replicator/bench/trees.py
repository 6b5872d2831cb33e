"""Generated source trees for ``replicator bench compare``.

Every tree comes from a seeded generator at a given scale, so two runs (and
every tool inside one run) see the same bytes. Data is random, hence
incompressible: no tool gains from compression it would not get on real
checkpoints.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from replicator.bench.workloads import MiB, safetensors

KiB = 1024


@dataclass(frozen=True)
class Scale:
    """How big each workload is; ``--scale`` picks one by name or a factor."""

    small_files: int
    large_files: int
    large_size: int
    ai_size: int

    @classmethod
    def named(cls, name: str) -> Scale:
        if name == "tiny":
            return cls(small_files=40, large_files=1, large_size=2 * MiB, ai_size=4 * MiB)
        factor = float(name)
        return cls(
            small_files=max(1, int(5000 * factor)),
            large_files=4,
            large_size=max(MiB, int(256 * MiB * factor)),
            ai_size=max(4 * MiB, int(512 * MiB * factor)),
        )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def small_tree(root: Path, count: int, seed: int) -> int:
    """``count`` files of 1-16 KiB in 100-file directories; their total bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        data = rng.randbytes(rng.randint(KiB, 16 * KiB))
        _write(root / f"d{i // 100:04d}" / f"f{i:06d}.bin", data)
        total += len(data)
    return total


def large_tree(root: Path, count: int, size: int, seed: int) -> int:
    rng = random.Random(seed)
    for i in range(count):
        _write(root / f"large-{i}.bin", _random(rng, size))
    return count * size


def _random(rng: random.Random, size: int) -> bytes:
    """``size`` bytes of ``rng`` in 64 MiB pieces: one ``randbytes`` call of
    256 MiB or more (the full-scale large file is 256 MiB) overflows on Python 3.11."""
    piece = 64 * MiB
    return b"".join(rng.randbytes(min(piece, size - at)) for at in range(0, size, piece))


@dataclass
class AiTree:
    """An AI-like tree and the in-place update from v1 to v2."""

    root: Path
    size: int
    seed: int
    changed_bytes: int = 0

    def _parts(self) -> tuple[int, int, int, int]:
        ckpt = self.size * 5 // 8
        return ckpt, self.size // 8, self.size // 8, self.size // 8

    def write_v1(self) -> int:
        rng = random.Random(self.seed)
        ckpt, shard, blob, fixed = self._parts()
        layers = {f"layer.{i}.weight": rng.randbytes(ckpt // 16) for i in range(16)}
        self._layers = layers
        _write(self.root / "ckpt" / "model.safetensors", safetensors(layers, {"step": "1000"}))
        _write(self.root / "data" / "shard-0000.jsonl", rng.randbytes(shard))
        _write(self.root / "blob.bin", rng.randbytes(blob))
        _write(self.root / "tokenizer.json", rng.randbytes(fixed))
        return self.size

    def write_v2(self) -> None:
        """3 of 16 tensors trained, 1/8 appended to the shard, 1/64 inserted
        in the middle of the blob; tokenizer.json untouched."""
        rng = random.Random(self.seed + 1)
        layers = dict(self._layers)
        for i in (3, 9, 14):
            layers[f"layer.{i}.weight"] = rng.randbytes(len(layers[f"layer.{i}.weight"]))
        _replace(self.root / "ckpt" / "model.safetensors", safetensors(layers, {"step": "2000"}))
        extra = rng.randbytes(self.size // 64)
        with (self.root / "data" / "shard-0000.jsonl").open("ab") as f:
            f.write(extra)
        blob_path = self.root / "blob.bin"
        blob = blob_path.read_bytes()
        ins = rng.randbytes(self.size // 64)
        mid = len(blob) // 2 + 12345
        _replace(blob_path, blob[:mid] + ins + blob[mid:])
        tensor = len(self._layers["layer.0.weight"])
        self.changed_bytes = 3 * tensor + len(extra) + len(ins)


def _replace(path: Path, data: bytes) -> None:
    """Save the way trainers do: a temp file, then rename over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def warm(root: Path) -> None:
    """Read every file once so no tool pays for a cold page cache alone."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(8 * MiB):
                    pass


def du(root: Path) -> int:
    """Bytes of the regular files under ``root`` (what a peer holds)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
