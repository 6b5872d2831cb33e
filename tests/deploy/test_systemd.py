"""The systemd units: ``systemd-analyze verify`` with nothing on stderr (a
misspelt key is only a warning with exit code 0), the ``systemd-analyze
security`` exposure guarded against regression, credentials only through
LoadCredential. Works without systemd as PID 1: verify runs with
--man=no --generators=no, security with --offline=true."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, need

SYSTEMD = DEPLOY / "systemd"
UNITS = [
    "replicator.service",
    "replicator-drill@.service",
    "replicator-drill@.timer",
    "replicator-heartbeat.service",
]
#: Where docs/install.md installs the console script; the test points the
#: units at this environment's script instead (verify checks it exists).
INSTALLED = "/opt/replicator/bin/replicator"
EXPOSURE = SYSTEMD / "security-exposure.txt"


def _script() -> str:
    script = Path(sys.executable).with_name("replicator")
    assert script.exists(), f"console script missing beside {sys.executable}"
    return str(script)


def _staged(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    """The units in ``tmp_path``, ExecStart pointed at this environment's
    script (the only change), plus ``extra`` lines appended to a unit."""
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        staged = text.replace(INSTALLED, _script())
        assert staged.count(_script()) == text.count(INSTALLED)
        if extra and name in extra:
            staged += extra[name]
        (tmp_path / name).write_text(staged)
    return tmp_path


def _verify(directory: Path) -> subprocess.CompletedProcess[str]:
    tool = need("systemd-analyze", "systemd")
    # An instance name loads the template; the timer pulls in the service.
    units = [
        "replicator.service",
        "replicator-drill@dr-eu.service",
        "replicator-drill@.timer",
        "replicator-heartbeat.service",
    ]
    return subprocess.run(
        [tool, "verify", "--man=no", "--generators=no", *(f"./{u}" for u in units)],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def test_verify_is_clean(tmp_path: Path) -> None:
    result = _verify(_staged(tmp_path))
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize("unit", UNITS)
def test_verify_catches_a_misspelt_key(tmp_path: Path, unit: str) -> None:
    # The clean result above means something only if this fails.
    result = _verify(_staged(tmp_path, {unit: "ProtectSytem=strict\n"}))
    assert "Unknown key 'ProtectSytem'" in result.stderr


def _exposure(directory: Path, unit: str) -> float:
    tool = need("systemd-analyze", "systemd")
    if unit.endswith("@.service"):  # a template is analysed as an instance
        instance = unit.replace("@.", "@dr-eu.")
        shutil.copy(directory / unit, directory / instance)
        unit = instance
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", f"./{unit}"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    print("\n".join(line for line in result.stdout.splitlines() if "✗" in line))
    return float(found.group(1))


def _recorded() -> dict[str, float]:
    out = {}
    for line in EXPOSURE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            unit, score = line.split()
            out[unit] = float(score)
    return out


SERVICES = ["replicator.service", "replicator-drill@.service", "replicator-heartbeat.service"]


@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure_does_not_regress(tmp_path: Path, unit: str) -> None:
    score = _exposure(_staged(tmp_path), unit)
    print(f"systemd-analyze security --offline=true {unit}: exposure {score}")
    assert score <= _recorded()[unit], f"{unit}: exposure {score} > recorded {_recorded()[unit]}"


def test_removing_hardening_raises_the_exposure(tmp_path: Path) -> None:
    weakened = (SYSTEMD / "replicator.service").read_text().replace("ProtectSystem=strict\n", "")
    (tmp_path / "replicator.service").write_text(weakened)
    assert _exposure(tmp_path, "replicator.service") > _recorded()["replicator.service"]


@pytest.mark.parametrize("unit", SERVICES)
def test_secrets_only_through_credentials(unit: str) -> None:
    text = (SYSTEMD / unit).read_text()
    assert "LoadCredential=aws-credentials:" in text
    assert "AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials" in text
    assert "EnvironmentFile" not in text
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "PASSWORD"):
        assert secret not in text.upper(), secret
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=replicator"):
        assert key in text, key
    assert re.search(r"^CapabilityBoundingSet=$", text, re.MULTILINE)
    assert re.search(r"^RestrictAddressFamilies=", text, re.MULTILINE)


def test_daemon_unit_lifecycle() -> None:
    text = (SYSTEMD / "replicator.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=replicator"):
        assert key in text, key
