"""``replicator bench chunk``: chunk + hash throughput, as ratios in one run.

Every rate is measured in the same process, on the same random bytes, best
of ``--repeat`` runs, so ratios compare like with like on whatever machine
runs it. Vocabulary of the output:

- *bound*: what fused chunk+hash cannot beat on one thread: it does all the
  work of the slower of its passes, so its rate is at most ``min(C, H)``
  from the rates C (cut only) and H (BLAKE3 only) measured here; with the
  whole-object digest every byte is hashed twice: ``min(C, H/2)``.
  ``fused_vs_bound`` is therefore at most 1 (up to measurement noise).
- *sequential model*: ``1 / (1/C + 1/H)``, the rate if the two passes ran
  back to back over memory. It is a model, not a ceiling: fused work shares
  loads and overlaps the two loops in the CPU, and often beats it. Its
  ratio is reported with its spread over the rounds (min and max).
- *peers*: the packages a user would otherwise pick (``pyfastcdc``, the
  ``blake3`` package, ``hf_xet``), measured only when installed.
- ``peak_rss_growth_bytes``: how much the peak resident set of a fresh
  process grows while ``chunk_file`` chunks the file (mapped file pages
  count), which configuration bounds, not the file's size.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from replicator import _native as native
from replicator.chunking import params_dict

GB = 1e9
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"64M"``, ``"4096"`` -> bytes (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[: len(t) - len(unit)]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise click.BadParameter(f"not a size: {text!r} (e.g. 1GiB, 64MiB, 4096)") from None
    if value <= 0:
        raise click.BadParameter(f"size must be positive, got {text!r}")
    return value


Case = tuple[int, Callable[[], object]]  # bytes processed, the work


def round_rates(cases: dict[str, Case], repeat: int) -> dict[str, list[float]]:
    """GB/s of each case in each round. The repetitions are interleaved
    (every case once per round), so load from other processes that comes
    and goes during the run hits every case alike instead of skewing the
    ratios between cases measured minutes apart."""
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (n, work) in cases.items():
            start = time.perf_counter()
            work()
            rates[name].append(n / max(time.perf_counter() - start, 1e-9) / GB)
    return rates


def native_cases(data: bytes, threads: int) -> dict[str, Case]:
    n = len(data)
    view = memoryview(bytearray(n))

    def memcpy() -> None:
        view[:] = data

    return {
        "memcpy": (n, memcpy),
        "blake3_1t": (n, lambda: native.blake3_digest(data)),
        "cdc_1t": (n, lambda: native.cut_only(data)),
        "fused_1t": (n, lambda: native.chunk_buffer(data, threads=1, whole_digest=False)),
        f"fused_{threads}t": (
            n,
            lambda: native.chunk_buffer(data, threads=threads, whole_digest=False),
        ),
        "fused_whole_1t": (n, lambda: native.chunk_buffer(data, threads=1, whole_digest=True)),
        f"fused_{threads}x1t_split": (n, lambda: _split_1t(data, threads)),
    }


def _split_1t(data: bytes, threads: int) -> None:
    """The machine's parallel capacity for this work: ``threads`` independent
    one-thread calls on equal parts, run at once (no resynchronisation, no
    merge). Shared or SMT vCPUs give far less than ``threads`` times one."""
    view, step = memoryview(data), len(data) // threads
    parts = [view[i * step : (i + 1) * step if i + 1 < threads else len(data)]
             for i in range(threads)]  # fmt: skip
    workers = [
        threading.Thread(target=native.chunk_buffer, args=(p,), kwargs={"whole_digest": False})
        for p in parts
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def _peer(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def peer_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("pyfastcdc", "blake3", "hf_xet"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def peer_cases(data: bytes) -> dict[str, Case]:
    """Chunk-only and hash-only work of the peer packages, when installed."""
    p = native.ChunkerParams()
    cases: dict[str, Case] = {}
    pyfastcdc = _peer("pyfastcdc")
    if pyfastcdc is not None:
        cdc = pyfastcdc.FastCDC(
            p.avg_size, min_size=p.min_size, max_size=p.max_size, normalized_chunking=1
        )

        def cut() -> None:
            for _ in cdc.cut_buf(data):
                pass

        cases["pyfastcdc"] = (len(data), cut)
    blake3 = _peer("blake3")
    if blake3 is not None:
        cases["blake3_py_1t"] = (len(data), lambda: blake3.blake3(data).digest())
    return cases


def write_file(directory: Path, data: bytes, size: int) -> Path:
    """A file of ``size`` bytes repeating ``data``, flushed to disk so that
    writeback does not run during the measurements (its pages stay cached)."""
    fd, name = tempfile.mkstemp(prefix="replicator-bench-", dir=directory)
    view = memoryview(data)
    with os.fdopen(fd, "wb") as f:
        left = size
        while left > 0:
            piece = view[: min(left, len(data))]
            f.write(piece)
            left -= len(piece)
        f.flush()
        os.fsync(f.fileno())
    return Path(name)


def file_cases(path: Path, threads: int) -> dict[str, Case]:
    """File -> chunk list (whole digest included), page cache warm."""
    size = path.stat().st_size
    native.chunk_file(path, threads=threads)  # warm the page cache
    cases: dict[str, Case] = {
        f"file_mmap_{threads}t": (size, lambda: native.chunk_file(path, threads=threads)),
        # read(2) is what the product's filesystem origin uses (no SIGBUS).
        f"file_read_{threads}t": (
            size,
            lambda: native.chunk_file(path, threads=threads, mmap=False),
        ),
    }
    hf_xet = _peer("hf_xet")
    if hf_xet is not None:
        cases["hf_xet_file"] = (size, lambda: hf_xet.hash_files([str(path)]))
    return cases


# Runs in a fresh interpreter, so that nothing the benchmark allocated
# before is in its peak. Writing 5 to clear_refs resets VmHWM to the current
# RSS (Linux >= 4.0); VmHWM afterwards is then the true peak of the call.
# Where that is refused, growth is measured from the start-up peak, which
# can only under-state it by what start-up used beyond its final RSS.
_RSS_PROBE = """
import json, sys
from replicator._native import chunk_file

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

path, threads, mmap = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False  # then VmHWM already holds the interpreter's start-up peak
if reset:
    chunk_file(path, threads=threads, mmap=mmap)  # start the thread pool first
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
before = status("VmRSS") if reset else status("VmHWM")
cl = chunk_file(path, threads=threads, mmap=mmap)
print(json.dumps({"growth": status("VmHWM") - before, "chunks": len(cl)}))
"""


def peak_rss_growth(path: Path, threads: int, mmap: bool) -> int:
    """Peak RSS growth, in bytes, of one ``chunk_file`` call on ``path``."""
    args = [sys.executable, "-c", _RSS_PROBE, str(path), str(threads), "1" if mmap else "0"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=3600)
    growth: int = json.loads(out.stdout)["growth"]
    return growth


def _model(fused: float, c: float, h: float) -> float:
    """Fused rate against the sequential model 1 / (1/C + 1/H)."""
    return fused * (1 / c + 1 / h)


def model_spread(rounds: dict[str, list[float]]) -> dict[str, float]:
    """``fused_vs_sequential_model`` of every round: its min and max."""
    per_round = [
        _model(f, c, h)
        for f, c, h in zip(rounds["fused_1t"], rounds["cdc_1t"], rounds["blake3_1t"], strict=True)
    ]
    return {
        "fused_vs_sequential_model_min": min(per_round),
        "fused_vs_sequential_model_max": max(per_round),
    }


#: What each side of a peer comparison computes (printed with the figures).
NOTES = {
    "file_vs_hf_xet": (
        "ours: chunk_file(read(2), threads=T): FastCDC-2020 cuts + BLAKE3 of every chunk + "
        "BLAKE3 of the whole file; hf_xet.hash_files: Xet's gearhash CDC + keyed BLAKE3 of "
        "every chunk + the Merkle file hash, on its own thread pool"
    ),
    "chunk_vs_pyfastcdc": "both: FastCDC cut points only, one thread, no hashing",
    "blake3_vs_blake3_py": "both: BLAKE3 of the whole buffer, one thread",
}


def compute_ratios(r: dict[str, float], threads: int) -> dict[str, float]:
    c, h = r["cdc_1t"], r["blake3_1t"]
    ratios = {
        "fused_vs_bound": r["fused_1t"] / min(c, h),
        "fused_whole_vs_bound": r["fused_whole_1t"] / min(c, h / 2),
        "fused_vs_sequential_model": _model(r["fused_1t"], c, h),
        "threads_speedup": r[f"fused_{threads}t"] / r["fused_1t"],
        # What the machine gives independent one-thread work, and how much
        # of that the resynchronised parallel call achieves.
        "parallel_capacity": r[f"fused_{threads}x1t_split"] / r["fused_1t"],
        "threads_speedup_vs_capacity": r[f"fused_{threads}t"] / r[f"fused_{threads}x1t_split"],
        "fused_vs_memcpy": r["fused_1t"] / r["memcpy"],
    }
    if "pyfastcdc" in r:
        ratios["chunk_vs_pyfastcdc"] = c / r["pyfastcdc"]
    if "blake3_py_1t" in r:
        ratios["blake3_vs_blake3_py"] = h / r["blake3_py_1t"]
    if "hf_xet_file" in r:
        ratios["file_vs_hf_xet"] = r[f"file_read_{threads}t"] / r["hf_xet_file"]
    return ratios


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes from a seeded generator (``randbytes`` is
    limited to 256 MiB per call on 3.11, so they come in pieces)."""
    rng = random.Random(seed)
    piece = 64 << 20
    return b"".join(rng.randbytes(min(piece, size - at)) for at in range(0, size, piece))


def run_bench(
    size: int, file_size: int, threads: int, repeat: int, directory: Path
) -> dict[str, Any]:
    data = random_bytes(size)
    path = write_file(directory, data, file_size)
    try:
        cases = native_cases(data, threads) | peer_cases(data) | file_cases(path, threads)
        rounds = round_rates(cases, repeat)
        rates = {name: max(r) for name, r in rounds.items()}
        del cases, data
        ratios = compute_ratios(rates, threads) | model_spread(rounds)
        ratios["peak_rss_growth_bytes"] = peak_rss_growth(path, threads, mmap=True)
        ratios["peak_rss_growth_read_bytes"] = peak_rss_growth(path, threads, mmap=False)
    finally:
        path.unlink()
    return {
        "size_bytes": size,
        "file_size_bytes": file_size,
        "threads": threads,
        "repeat": repeat,
        "cpus": os.cpu_count(),
        "params": params_dict(native.ChunkerParams()),
        "peers": peer_versions(),
        "rates_gbps": rates,
        "ratios": ratios,
        "notes": {k: v for k, v in NOTES.items() if k in ratios},
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"chunk bench: {result['size_bytes'] / (1 << 20):.0f} MiB in memory, "
        f"{result['file_size_bytes'] / (1 << 20):.0f} MiB file, threads={result['threads']}, "
        f"best of {result['repeat']}",
        "",
        f"{'measure':<22}{'GB/s':>9}",
    ]
    lines += [f"{k:<22}{v:>9.3f}" for k, v in result["rates_gbps"].items()]
    lines += ["", f"{'ratio':<28}{'value':>14}"]
    for k, v in result["ratios"].items():
        shown = f"{v / (1 << 20):.1f} MiB" if k.endswith("_bytes") else f"{v:.3f}"
        lines.append(f"{k:<28}{shown:>14}")
    for k, v in result["notes"].items():
        lines.append(f"  {k}: {v}")
    missing = [name for name, ver in result["peers"].items() if ver is None]
    if missing:
        lines.append(f"\nnot installed (their ratios are absent): {', '.join(missing)}")
    return "\n".join(lines)


@click.command("chunk")
@click.option("--size", default="1GiB", show_default=True, help="In-memory input size.")
@click.option("--file-size", default=None, help="File size for the file cases [--size].")
@click.option(
    "--threads", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True
)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the temporary file goes [system temp dir].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def chunk(
    *,
    size: str,
    file_size: str | None,
    threads: int,
    repeat: int,
    directory: Path | None,
    as_json: bool,
) -> None:
    """Chunk + hash throughput against its ceilings and its peers, as ratios."""
    nbytes = parse_size(size)
    result = run_bench(
        nbytes,
        parse_size(file_size) if file_size else nbytes,
        threads,
        repeat,
        directory or Path(tempfile.gettempdir()),
    )
    click.echo(json.dumps(result, indent=2) if as_json else render(result))
