"""./dev test's background jobs and the suite's order (docs/testing.md).

The jobs are started by the real shell functions ./dev sources
(tests/services/background.sh) and waited for by the real reader the
SeaweedFS fixture uses (tests/services/background.py); the order is the one
pytest really collects.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import background
from tests.services.process import ServiceError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "services" / "background.sh"


def start_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, command: str) -> Path:
    """Start ``command`` as ./dev would (idle priority); point the reader at it."""
    script = (
        f"set -euo pipefail; log() {{ :; }}; export TMPDIR={shlex.quote(str(tmp_path))}; "
        f". {shlex.quote(str(SCRIPT))}; background {name} idle bash -c {shlex.quote(command)}; "
        'trap - EXIT; echo "$BG"'  # the job outlives this shell, as it outlives ./dev's set-up
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    where = Path(done.stdout.strip())
    monkeypatch.setenv(background.ENV, str(where))
    return where


def started(where: Path, name: str, argv: list[str]) -> int:
    """The job's process group, once ``argv`` runs in it (setsid, nice and chrt
    take a moment to exec on a loaded machine); fails after a minute."""
    group = int((where / f"{name}.pid").read_text())
    deadline, listing = time.monotonic() + 60.0, ""
    argv_ps = ["ps", "-o", "cls=,ni=,args=", "-g", str(group)]
    while time.monotonic() < deadline:
        # check=False: ps exits 1 while the group does not exist yet.
        listing = subprocess.run(argv_ps, capture_output=True, text=True, check=False).stdout
        if any(line.split()[2:] == argv for line in listing.splitlines()):
            return group
        time.sleep(0.1)
    raise AssertionError(f"{argv} not running in group {group}: {listing}")


def test_a_successful_job_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = start_job(tmp_path, monkeypatch, "build", "sleep 2; echo built")
    assert background.pending("build")
    waited = background.wait_for("build", "the test build")
    assert not background.pending("build")
    assert (where / "build.status").read_text().strip() == "0"
    assert (where / "build.log").read_text() == "built\n"
    print(f"waited {waited:.1f} s for a 2 s job")


def test_a_failed_job_raises_with_its_exit_code_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_job(tmp_path, monkeypatch, "weed", "echo 'go: module lookup disabled' >&2; exit 3")
    failed = r"(?s)the test build failed \(exit 3\).*lookup disabled"
    with pytest.raises(ServiceError, match=failed):
        background.wait_for("weed", "the test build")


def test_a_killed_job_raises_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = start_job(tmp_path, monkeypatch, "weed", "sleep 60")
    os.killpg(started(where, "weed", ["sleep", "60"]), signal.SIGKILL)
    with pytest.raises(ServiceError, match="died without an exit status"):
        background.wait_for("weed", "the test build")


@pytest.mark.skipif(shutil.which("chrt") is None, reason="no chrt: idle jobs run at nice 19")
def test_an_idle_job_runs_under_sched_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = start_job(tmp_path, monkeypatch, "weed", "sleep 30")
    group = started(where, "weed", ["sleep", "30"])
    try:
        argv = ["ps", "-o", "cls=,ni=,args=", "-g", str(group)]
        listing = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        job = [line.split() for line in listing.splitlines() if line.split()[2:] == ["sleep", "30"]]
        assert job == [["IDL", "-", "sleep", "30"]], listing
    finally:
        os.killpg(group, signal.SIGKILL)


def test_without_dev_nothing_is_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(background.ENV, raising=False)
    assert not background.pending("weed")
    assert background.wait_for("weed", "the test build") == 0.0


def test_seaweedfs_tests_are_collected_last() -> None:
    modules = ["tests/integration/test_backend_contract.py", "tests/integration/test_safety_s3.py"]
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*argv, *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    weed = [i for i, test in enumerate(ids) if "seaweedfs" in test]
    other = [i for i, test in enumerate(ids) if "seaweedfs" not in test]
    assert weed and other
    assert max(other) < min(weed), "\n".join(ids)
    # Within each group the collected order stays: module by module.
    assert [ids[i].split("::")[0] for i in weed] == sorted(ids[i].split("::")[0] for i in weed)
    print(f"{len(other)} tests first, then {len(weed)} on SeaweedFS")
