"""The program's plain ``backfill`` (replicator/program.py, no click) ends
exactly as the click group does: each command line runs once each way, as
real processes on real directories, and stdout, stderr and the exit code
are compared byte for byte (the run's own seconds aside)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from replicator.program import plain_backfill

#: The console script (program.main) and the click group it falls back to.
PROGRAM = "from replicator.program import main; main()"
GROUP = "from replicator.cli import main; main()"


def _tree(root: Path, *, source: bool = True, extra: str = "") -> Path:
    """A source of three files, a peer and a config; returns the config."""
    src = root / "src"
    if source:
        src.mkdir(parents=True)
        for i in range(3):
            (src / f"f{i}").write_bytes(bytes([i]) * (4000 + i))
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{src}"\n\n'
        f'[[destinations]]\nname = "a"\ntype = "fs"\npath = "{root / "peer"}"\n\n'
        f'[store]\ncache_dir = "{root / "cache"}"\n{extra}'
    )
    return cfg


def _run(code: str, root: Path, args: list[str]) -> tuple[int, str, str]:
    argv = [
        a.replace("{cfg}", str(root / "replicator.toml")).replace("{root}", str(root)) for a in args
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False, cwd=root
    )

    # What differs between two runs of the same work: where and how long.
    def same(text: str) -> str:
        text = text.replace(str(root), "<root>")
        text = re.sub(r'"elapsed_seconds": [0-9.]+', '"elapsed_seconds": 0', text)
        return re.sub(r"in [0-9.]+ s\n", "in _ s\n", text)

    return done.returncode, same(done.stdout), same(done.stderr)


CASES = {
    "json": ["backfill", "--config", "{cfg}", "--json"],
    "human, --config=": ["backfill", "--config={cfg}"],
    "prefix and flags": [
        "backfill",
        "--prefix",
        "f1",
        "--allow-deletes",
        "--json",
        "--config",
        "{cfg}",
    ],
    "prefix=": ["backfill", "--config", "{cfg}", "--prefix=f", "--json"],
    "missing config": ["backfill", "--config", "{root}/nothing.toml"],
    "config is a directory": ["backfill", "--config", "{root}"],
    "unknown option": ["backfill", "--config", "{cfg}", "--bogus"],
    "help": ["backfill", "--help"],
    "value that looks like an option": ["backfill", "--config", "--json"],
    "repeated": ["backfill", "--config", "{cfg}", "--json", "--json"],
    "missing value": ["backfill", "--config"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_both_ways(tmp_path: Path, case: str) -> None:
    outcomes = []
    for way, code in (("group", GROUP), ("program", PROGRAM)):
        root = tmp_path / way
        _tree(root)
        first = _run(code, root, CASES[case])
        # The no-op run after a first copy (the two output shapes only).
        again = _run(code, root, CASES[case]) if case in ("json", "human, --config=") else None
        outcomes.append((first, again))
    print(case, outcomes[1][0][0], outcomes[1][0][2][-200:])
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    ("why", "extra", "source"),
    [
        ("unknown key", "bogus = 1\n", True),
        ("source missing", "", False),
    ],
)
def test_errors_same_bytes_both_ways(tmp_path: Path, why: str, extra: str, source: bool) -> None:
    outcomes = []
    for way, code in (("group", GROUP), ("program", PROGRAM)):
        root = tmp_path / way
        _tree(root, source=source, extra=extra)
        outcomes.append(_run(code, root, CASES["json"]))
    print(why, outcomes[1])
    assert outcomes[1][0] == 2
    assert outcomes[1][2].startswith("error: ")
    assert outcomes[0] == outcomes[1]


def test_plain_backfill_loads_no_click(tmp_path: Path) -> None:
    """The point of the plain way: click is ~10 % of a no-op's start-up."""
    _tree(tmp_path)
    report = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] == 'click')), file=sys.stderr))\n" + PROGRAM
    )
    code, out, err = _run(report, tmp_path, CASES["json"])
    assert code == 0, err
    assert json.loads(out)["replicated"] == 3
    assert json.loads(err.splitlines()[-1]) == []


def test_what_goes_to_click() -> None:
    assert plain_backfill(["backfill"]) == (None, "", False, False)
    assert plain_backfill(["backfill", "--prefix=", "--json"]) == (None, "", True, False)
    for args in (
        [],
        ["restore", "--config", "x"],
        ["--debug", "backfill"],
        ["backfill", "--json=1"],
        ["backfill", "--config="],
        ["backfill", "--prefix", "-x"],
        ["backfill", "--", "--json"],
        ["backfill", "extra"],
    ):
        assert plain_backfill(args) is None, args
