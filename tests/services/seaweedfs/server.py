"""Run ``weed server -s3`` on free 127.0.0.1 ports with real S3 identities.

``weed server`` runs master, volume server, filer and S3 gateway in one
process (``weed mini`` does too, but also starts WebDAV, the admin UI and
Iceberg/Lance endpoints on fixed ports we would have to chase). Every port,
including each gRPC port (by default http port + 10000, which may be taken),
is chosen explicitly. Identities come from an s3 config JSON, so requests
are really signed and checked: a wrong secret gets 403, and the read-only
identity gets 403 on writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from tests.services import background
from tests.services.process import ServerProcess, ServiceError, free_port
from tests.services.s3client import S3Endpoint

WEED_ENV = "REPLICATOR_WEED"
#: The name of ./dev test's background build job (tests/services/background.py).
BUILD_JOB = "weed"
BUILD_WHAT = "the SeaweedFS build (tests/services/seaweedfs/build.sh)"


def weed_binary() -> Path | None:
    """The binary built by tests/services/seaweedfs/build.sh (or $REPLICATOR_WEED)."""
    explicit = os.environ.get(WEED_ENV)
    cache = Path(os.environ.get("REPLICATOR_CACHE", Path.home() / ".cache" / "replicator"))
    path = Path(explicit) if explicit else cache / "bin" / "weed"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _identities(admin: S3Endpoint, reader: S3Endpoint) -> dict[str, object]:
    def ident(name: str, ep: S3Endpoint, actions: list[str]) -> dict[str, object]:
        creds = [{"accessKey": ep.access_key_id, "secretKey": ep.secret_access_key}]
        return {"name": name, "credentials": creds, "actions": actions}

    return {
        "identities": [
            ident("replicator", admin, ["Admin", "Read", "List", "Tagging", "Write"]),
            ident("reader", reader, ["Read", "List"]),
        ]
    }


class SeaweedServer:
    def __init__(self, workdir: Path, *, volumes: int = 16):
        self.volumes = volumes  # of 64 MB each: the server's capacity
        # ./dev test builds weed in the background while the other tests run.
        background.wait_for(BUILD_JOB, BUILD_WHAT)
        binary = weed_binary()
        if binary is None:
            raise ServiceError("weed not built: run tests/services/seaweedfs/build.sh")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.endpoint = S3Endpoint(
            "seaweedfs", self.url, "AKREPLICATOR" + secrets.token_hex(4), secrets.token_hex(20)
        )
        self.reader = S3Endpoint(
            "seaweedfs", self.url, "AKREADER" + secrets.token_hex(4), secrets.token_hex(20)
        )
        config = workdir / "s3.json"
        config.write_text(json.dumps(_identities(self.endpoint, self.reader)))
        config.chmod(0o600)
        data = workdir / "data"
        data.mkdir()
        self.process = ServerProcess(self._argv(binary, data, config), workdir / "weed.log")
        self.process.wait_ready(self._ready, "weed server -s3")

    def _argv(self, binary: Path, data: Path, config: Path) -> list[str]:
        p = {name: free_port() for name in ("master", "volume", "filer")}
        g = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        return [
            str(binary), "server",
            f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={g['master']}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}",
            f"-volume.max={self.volumes}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
            f"-filer.localSocket={data}/filer.sock",
            "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={g['s3']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={data}/s3.sock", f"-s3.config={config}",
        ]  # fmt: skip

    def _ready(self) -> bool:
        """Ready when an object can really be written: the volume server has registered."""
        client = self.endpoint.client()
        bucket = "replicator-ready"
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)  # a retry of a half-done attempt
        client.put_object(Bucket=bucket, Key="ready", Body=b"ready")
        client.delete_object(Bucket=bucket, Key="ready")
        client.delete_bucket(Bucket=bucket)
        return True

    def stop(self) -> None:
        self.process.stop()
