"""``replicator bench compare``: the same workloads through replicator and
the tools operators would otherwise use (restic, borg, rclone), side by side.

Each tool copies the same generated tree to its own fresh repository on the
same disk, as a separate process (start-up cost counts for everyone).
Reported per workload and tool: wall time and bytes at the peer; ratios are
replicator's figure over each other tool's, all from this one run. Tools
that are not installed are listed as skipped, never guessed.

Workloads: ``small_first`` (first copy of many 1-16 KiB files),
``small_rerun`` (the same tree again, nothing changed), ``large_first``
(first copy of a few large files, beside a plain write + fsync of the same
bytes), ``ai_update`` (a checkpoint with frozen tensors, an appended shard,
bytes inserted in a blob, an unchanged file: v1 copied untimed, then v2).

``--rounds N`` times the small first copy, the unchanged re-run and the AI
update N times, every tool once per round (the first copy into a fresh
repository each time) and their order turned each round; every timed copy
starts after ``os.sync()``, from the same clean page cache. A row's seconds
is its median and each ratio the median of the rounds' own ratios, so a
load spike on this shared machine moves one round, not the figure.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import replicator
from replicator.bench.trees import AiTree, Scale, du, large_tree, reset, small_tree, warm


class Tool:
    """One copying program; subclasses say how to set up and run it."""

    name = ""
    program = ""

    def __init__(self, work: Path) -> None:
        self.work = work / self.name
        self.repo = self.work / "repo"
        self.runs = 0
        self.output = ""  # the last copy's stdout

    def available(self) -> bool:
        return shutil.which(self.program) is not None

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def init(self) -> list[str] | None:
        return None

    def copy_cmd(self, src: Path) -> list[str]:
        raise NotImplementedError

    def fresh(self) -> None:
        reset(self.work)
        self.repo.mkdir(exist_ok=True)
        self.runs = 0
        if (cmd := self.init()) is not None:
            _run(cmd, self.env(), self.name)

    def copy(self, src: Path) -> float:
        self.runs += 1
        # Nobody pays for writeback left dirty by the tool before (or by the
        # generated tree): every timed copy starts on a clean page cache.
        os.sync()
        started = time.perf_counter()
        self.output = _run(self.copy_cmd(src), self.env(), self.name)
        return time.perf_counter() - started


def _run(cmd: list[str], env: dict[str, str], who: str) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise click.ClickException(f"{who} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


class Replicator(Tool):
    name = "replicator"

    def available(self) -> bool:
        return True

    def init(self) -> list[str] | None:
        self.repo.rmdir()  # the store is created by the first run
        compile_package()
        return None

    def copy_cmd(self, src: Path) -> list[str]:
        cfg = self.work / "replicator.toml"
        cfg.write_text(
            f'[source]\ntype = "fs"\npath = {json.dumps(str(src))}\n\n'
            f'[[destinations]]\nname = "peer"\ntype = "fs"\npath = {json.dumps(str(self.repo))}\n\n'
            f"[store]\ncache_dir = {json.dumps(str(self.work / 'cache'))}\n"
        )
        exe = Path(sys.executable).with_name("replicator")
        return [str(exe), "backfill", "--config", str(cfg), "--json"]


def compile_package() -> None:
    """Byte-compile replicator's own modules, as installing it does.

    From a source checkout with PYTHONDONTWRITEBYTECODE set, every run
    compiled each module it imported again (~0.1 s of each start-up here);
    an installed replicator never does, and neither does borg."""
    compileall.compile_dir(Path(replicator.__file__).parent, quiet=2)


class Restic(Tool):
    name = program = "restic"

    def env(self) -> dict[str, str]:
        cache = str(self.work / "cache")
        return {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": cache}

    def init(self) -> list[str]:
        return ["restic", "-q", "-r", str(self.repo), "init"]

    def copy_cmd(self, src: Path) -> list[str]:
        return ["restic", "-q", "-r", str(self.repo), "backup", str(src)]


class Borg(Tool):
    name = program = "borg"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BORG_BASE_DIR": str(self.work / "home"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self) -> list[str]:
        self.repo.rmdir()
        return ["borg", "init", "--encryption=none", str(self.repo)]

    def copy_cmd(self, src: Path) -> list[str]:
        return ["borg", "create", f"{self.repo}::run{self.runs}", str(src)]


class Rclone(Tool):
    name = program = "rclone"

    def copy_cmd(self, src: Path) -> list[str]:
        conf = self.work / "rclone.conf"
        conf.touch()
        return ["rclone", "--config", str(conf), "sync", str(src), str(self.repo)]


TOOLS: tuple[type[Tool], ...] = (Replicator, Restic, Borg, Rclone)


#: Rounds of the large first copy: replicator and the write + fsync baseline
#: take turns, so both see the same disk and the same load.
LARGE_ROUNDS = 3


def write_fsync(src: Path, dst: Path) -> float:
    """The disk's baseline: copy every file with one write and an fsync each
    (from a clean page cache, as each tool's copy starts)."""
    reset(dst)
    os.sync()
    started = time.perf_counter()
    for path in sorted(src.iterdir()):
        data = path.read_bytes()
        fd = os.open(dst / path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    dfd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.perf_counter() - started


class Comparison:
    """Runs every workload through every installed tool, collecting figures."""

    def __init__(self, root: Path, scale: Scale, seed: int, rounds: int = 1) -> None:
        self.root = root
        self.scale = scale
        self.seed = seed
        self.rounds = rounds
        all_tools = [t(root / "tools") for t in TOOLS]
        self.tools = [t for t in all_tools if t.available()]
        self.skipped = [t.name for t in all_tools if not t.available()]
        self.results: dict[str, dict[str, Any]] = {}

    def _each(self, workload: str, fn: Callable[[Tool], dict[str, Any]]) -> None:
        self.results[workload] = {t.name: fn(t) for t in self.tools}

    def _order(self, turn: int) -> list[Tool]:
        """Every tool, the first one moved to the end at each turn."""
        k = turn % len(self.tools)
        return self.tools[k:] + self.tools[:k]

    def _in_turns(
        self,
        workload: str,
        one_round: Callable[[int], dict[str, float]],
        peer_bytes: Callable[[Tool], int],
    ) -> None:
        """``one_round(i)`` times every tool once; a row keeps each round's
        seconds and their median."""
        rounds = [one_round(i) for i in range(self.rounds)]
        self.results[workload] = {
            t.name: {
                "seconds": statistics.median(r[t.name] for r in rounds),
                "peer_bytes": peer_bytes(t),
                "rounds": [r[t.name] for r in rounds],
            }
            for t in self.tools
        }

    def small(self) -> None:
        src = self.root / "small"
        data = small_tree(src, self.scale.small_files, self.seed)
        warm(src)

        def first_copies(turn: int) -> dict[str, float]:
            # Each tool copies into a fresh repository, in turns like the
            # other workloads: run once, replicator always first, one load
            # spike on this shared machine was the figure (0.78-1.18x restic
            # in three runs minutes apart).
            out: dict[str, float] = {}
            for t in self._order(turn):
                t.fresh()
                out[t.name] = t.copy(src)
            return out

        # The repositories of the last round stay for the re-runs.
        self._in_turns("small_first", first_copies, lambda t: du(t.repo))
        self.results["small_first"]["_data"] = {"files": self.scale.small_files, "bytes": data}
        self._in_turns(
            "small_rerun",
            lambda i: {t.name: t.copy(src) for t in self._order(i)},
            lambda t: du(t.repo),
        )

    def large(self) -> None:
        src = self.root / "large"
        data = large_tree(src, self.scale.large_files, self.scale.large_size, self.seed + 1)
        warm(src)

        def one(t: Tool) -> dict[str, Any]:
            t.fresh()
            return {"seconds": t.copy(src), "peer_bytes": du(t.repo)}

        self._each("large_first", one)
        self.results["large_first"]["_data"] = {"bytes": data, **self._large_rounds(src)}

    def _large_rounds(self, src: Path) -> dict[str, Any]:
        """replicator's fresh copy and the write + fsync baseline, in turns.

        The baseline used to run once, after every tool, and moved 1.3 -> 2.5 s
        between runs; in turns, each round's ratio compares like with like.
        ``in_run`` divides by replicator's own elapsed time (no process start-up)."""
        mine = next(t for t in self.tools if t.name == "replicator")
        rounds: list[dict[str, float]] = []
        for _ in range(LARGE_ROUNDS):
            base = write_fsync(src, self.root / "write_fsync")
            shutil.rmtree(self.root / "write_fsync")
            mine.fresh()
            wall = mine.copy(src)
            elapsed = float(json.loads(mine.output)["elapsed_seconds"])
            rounds.append({"write_fsync": base, "replicator": wall, "replicator_in_run": elapsed})
        return {"write_fsync_seconds": min(r["write_fsync"] for r in rounds), "rounds": rounds}

    def ai_update(self) -> None:
        tree = AiTree(self.root / "ai", self.scale.ai_size, self.seed + 2)
        before: dict[str, int] = {}

        def one_round(turn: int) -> dict[str, float]:
            reset(tree.root)  # each round from v1 again: every tool copies it, untimed
            tree.write_v1()
            for t in self.tools:
                t.fresh()
                t.copy(tree.root)
                before[t.name] = du(t.repo)
            tree.write_v2()
            warm(tree.root)
            return {t.name: t.copy(tree.root) for t in self._order(turn)}

        self._in_turns("ai_update", one_round, lambda t: du(t.repo) - before[t.name])
        self.results["ai_update"]["_data"] = {"changed_bytes": tree.changed_bytes}

    def run(self) -> dict[str, Any]:
        self.small()
        self.large()
        self.ai_update()
        return {
            "scale": vars(self.scale),
            "seed": self.seed,
            "rounds": self.rounds,
            "skipped": self.skipped,
            "python": interpreter(),
            "workloads": self.results,
            "ratios": ratios(self.results, self.scale),
        }


def interpreter() -> dict[str, str]:
    """The interpreter replicator ran on: its build moves every Python-bound
    figure (~20 % between pyenv's shared, unoptimised build and Debian's own
    on this project's machines: docs/performance.md, "The interpreter")."""
    return {
        "executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "version": sys.version.split()[0],
    }


def ratios(results: dict[str, dict[str, Any]], scale: Scale) -> dict[str, float]:
    """replicator's time over each tool's, and the targets' own figures."""
    out: dict[str, float] = {}
    for workload, rows in results.items():
        mine = rows["replicator"].get("rounds", [rows["replicator"]["seconds"]])
        for tool, row in rows.items():
            if tool in ("replicator", "_data"):
                continue
            # Each round's ratio (the same minutes), then their median.
            theirs = row.get("rounds", [row["seconds"]])
            per_round = [a / b for a, b in zip(mine, theirs, strict=True) if b > 0]
            if per_round:
                out[f"{workload}.time_vs_{tool}"] = statistics.median(per_round)
    rounds = results["large_first"]["_data"]["rounds"]
    out["large_first.throughput_vs_write_fsync"] = statistics.median(
        r["write_fsync"] / r["replicator"] for r in rounds
    )
    out["large_first.throughput_vs_write_fsync_in_run"] = statistics.median(
        r["write_fsync"] / r["replicator_in_run"] for r in rounds
    )
    ai = results["ai_update"]
    out["ai_update.peer_bytes_vs_changed"] = (
        ai["replicator"]["peer_bytes"] / ai["_data"]["changed_bytes"]
    )
    out["small_first.us_per_object"] = (
        results["small_first"]["replicator"]["seconds"] / scale.small_files * 1e6
    )
    out["small_rerun.seconds"] = results["small_rerun"]["replicator"]["seconds"]
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"{'workload':<13} {'tool':<11} {'seconds':>9} {'peer bytes':>14}"]
    for workload, rows in result["workloads"].items():
        for tool, row in rows.items():
            if tool != "_data":
                lines.append(
                    f"{workload:<13} {tool:<11} {row['seconds']:>9.3f} {row['peer_bytes']:>14,}"
                )
    lines.append("")
    lines += [f"{name:<46} {value:>10.3f}" for name, value in result["ratios"].items()]
    python = result["python"]
    lines.append(f"replicator ran on python {python['version']} ({python['executable']})")
    if result["skipped"]:
        lines.append(f"not installed (skipped): {', '.join(result['skipped'])}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--scale", default="1", show_default=True, help="'tiny', or a factor of the full size."
)
@click.option("--seed", default=7, show_default=True, help="Seed of the generated trees.")
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    type=click.IntRange(1, 50),
    help="Rounds of the small first copy, re-run and AI update (tools in turns); medians.",
)
@click.option("--dir", "workdir", type=click.Path(path_type=Path), help="Work directory (temp).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(scale: str, seed: int, rounds: int, workdir: Path | None, as_json: bool) -> None:
    """replicator beside restic, borg and rclone on the same trees, one run."""
    try:
        size = Scale.named(scale)
    except ValueError:
        msg = f"{scale!r} is neither 'tiny' nor a number"
        raise click.BadParameter(msg, param_hint="--scale") from None
    with tempfile.TemporaryDirectory(prefix="replicator-compare-", dir=workdir) as tmp:
        result = Comparison(Path(tmp), size, seed, rounds).run()
    click.echo(json.dumps(result, indent=2) if as_json else table(result))
