"""prometheus-operator's CRDs (ServiceMonitor, PrometheusRule), for
validating deploy/kubernetes offline against their real openAPIV3Schema.

They come from the Go module zip of github.com/prometheus-operator/
prometheus-operator at a pinned version, served by the Go module proxy and
checked against a pinned SHA-256. The two YAML files are extracted into
``~/.cache/replicator/crds/<version>/`` under a file lock, so parallel
sessions fetch once; afterwards nothing touches the network.

``python -m tests.services.crds prepare`` fetches them (./dev ops_tools).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

from tests.services.process import ServiceError

MODULE = "github.com/prometheus-operator/prometheus-operator"
VERSION = "v0.85.0"
#: SHA-256 of the module zip as the proxy serves it (reproducible: Go module zips).
ZIP_SHA256 = "0bdb88ed823d0f2e86cf909638439b6ad1da744a228172c7411d9987527dc5d1"
PROXY = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0].rstrip("/")
#: kind -> file in the module's example/prometheus-operator-crd/.
FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
FETCH_TIMEOUT_S = 120


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "replicator" / "crds" / VERSION


def prepare() -> Path:
    """The directory holding the CRD files, fetching them the first time."""
    where = cache_dir()
    if all((where / name).is_file() for name in FILES.values()):
        return where
    where.mkdir(parents=True, exist_ok=True)
    with open(where.parent / f"{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((where / name).is_file() for name in FILES.values()):
            _extract(_fetch(), where)
    return where


def _fetch() -> bytes:
    url = f"{PROXY}/{MODULE}/@v/{VERSION}.zip"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            data = bytes(resp.read())
    except OSError as exc:
        raise ServiceError(f"cannot fetch {url}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != ZIP_SHA256:
        raise ServiceError(f"{url}: sha256 {digest}, expected {ZIP_SHA256}")
    return data


def _extract(data: bytes, where: Path) -> None:
    prefix = f"{MODULE}@{VERSION}/example/prometheus-operator-crd/"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in FILES.values():
            body = archive.read(prefix + name)
            tmp = where / f".{name}.tmp"
            tmp.write_bytes(body)
            os.replace(tmp, where / name)


def schema(kind: str, api_version: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` at ``api_version`` (group/version)."""
    crd = yaml.safe_load((prepare() / FILES[kind]).read_text())
    group, _, version = api_version.partition("/")
    if crd["spec"]["group"] != group:
        raise ValueError(f"{kind}: group {group!r}, the CRD serves {crd['spec']['group']!r}")
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", True):
            found: dict[str, Any] = served["schema"]["openAPIV3Schema"]
            return found
    raise ValueError(f"{kind}: the CRD serves no version {version!r}")


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: python -m tests.services.crds prepare")
    print(prepare())
