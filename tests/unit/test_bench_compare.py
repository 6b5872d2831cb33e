"""``replicator bench compare`` runs every workload through every installed
tool on a tiny tree. Figures come from full runs, never from this test: it
checks the command works and that its byte counts mean what they say."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from click.testing import CliRunner

from replicator.bench.compare import TOOLS, Comparison
from replicator.bench.trees import Scale, large_tree
from replicator.bench.workloads import MiB
from replicator.cli import main

TINY = Scale(small_files=12, large_files=1, large_size=MiB, ai_size=4 * MiB)


def test_every_workload_every_installed_tool(tmp_path: Path) -> None:
    result = Comparison(tmp_path, TINY, seed=3).run()
    installed = {t.name for t in TOOLS if t.name == "replicator" or shutil.which(t.program)}
    w = result["workloads"]
    for workload in ("small_first", "small_rerun", "large_first", "ai_update"):
        assert set(w[workload]) - {"_data"} == installed, workload
    assert set(result["skipped"]) == {t.name for t in TOOLS} - installed
    # The interpreter is part of every Python-bound figure: it is reported.
    assert Path(result["python"]["executable"]).is_file()
    assert result["python"]["version"].startswith("3.")
    mine = {k: v["replicator"] for k, v in w.items()}
    # A first copy holds at least the data; an unchanged re-run adds nothing.
    assert mine["small_first"]["peer_bytes"] >= w["small_first"]["_data"]["bytes"]
    assert mine["small_rerun"]["peer_bytes"] == mine["small_first"]["peer_bytes"]
    assert mine["large_first"]["peer_bytes"] >= w["large_first"]["_data"]["bytes"]
    # The update ships about what changed, far less than the tree.
    changed = w["ai_update"]["_data"]["changed_bytes"]
    assert changed <= mine["ai_update"]["peer_bytes"] < TINY.ai_size
    print(json.dumps(result["ratios"], indent=1))


def test_cli_rejects_a_bad_scale() -> None:
    out = CliRunner().invoke(main, ["bench", "compare", "--scale", "huge"])
    assert out.exit_code == 2
    assert "--scale" in out.output


def test_large_tree_writes_files_over_256_mib(tmp_path: Path) -> None:
    """The full-scale large file is 256 MiB; one ``randbytes`` call of 256 MiB or more
    overflows on Python 3.11 (``bench compare`` at scale 1 failed with it)."""
    size = 256 * MiB + 4096
    assert large_tree(tmp_path, 1, size, seed=3) == size
    data = (tmp_path / "large-0.bin").read_bytes()
    assert len(data) == size
    assert data[:4096] == random.Random(3).randbytes(4096)  # seeded, reproducible


def test_rounds_in_turns_report_medians_of_same_round_ratios(tmp_path: Path) -> None:
    """``--rounds 3``: the small first copy (a fresh repository each round),
    the re-run and the AI update are timed three times, every tool once per
    round, the order turned each round; a ratio is the median of the
    rounds' own ratios, not a ratio of medians."""
    comparison = Comparison(tmp_path, TINY, seed=5, rounds=3)
    names = [t.name for t in comparison.tools]
    orders = [[t.name for t in comparison._order(i)] for i in range(3)]
    assert all(sorted(o) == sorted(names) for o in orders)
    if len(names) > 1:
        assert orders[0][0] != orders[1][0]
    result = comparison.run()
    w = result["workloads"]
    assert result["rounds"] == 3
    for workload in ("small_first", "small_rerun", "ai_update"):
        for name in names:
            row = w[workload][name]
            assert len(row["rounds"]) == 3 and row["seconds"] == sorted(row["rounds"])[1]
    assert (
        w["small_rerun"]["replicator"]["peer_bytes"] == w["small_first"]["replicator"]["peer_bytes"]
    )
    # Each round's first copy started from an empty repository: the last
    # one holds the tree once, not three times.
    first = w["small_first"]["replicator"]["peer_bytes"]
    assert w["small_first"]["_data"]["bytes"] <= first < 2 * w["small_first"]["_data"]["bytes"]
    changed = w["ai_update"]["_data"]["changed_bytes"]
    assert changed <= w["ai_update"]["replicator"]["peer_bytes"] < TINY.ai_size
    got = result["ratios"]
    for name in names[1:]:
        mine, theirs = w["ai_update"]["replicator"]["rounds"], w["ai_update"][name]["rounds"]
        expected = sorted(a / b for a, b in zip(mine, theirs, strict=True))[1]
        assert got[f"ai_update.time_vs_{name}"] == expected
        mine, theirs = w["small_first"]["replicator"]["rounds"], w["small_first"][name]["rounds"]
        expected = sorted(a / b for a, b in zip(mine, theirs, strict=True))[1]
        assert got[f"small_first.time_vs_{name}"] == expected
    print(json.dumps({k: v for k, v in got.items() if k.startswith(("ai", "small"))}, indent=1))
