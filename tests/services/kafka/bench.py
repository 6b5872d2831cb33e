"""Run ``replicator bench e2e --source kafka`` against the project's own services.

    python -m tests.services.kafka.bench [--s3 moto|seaweedfs] [BENCH OPTIONS...]

Starts a Kafka broker (this package) and an S3 server (moto server, or
SeaweedFS) on free 127.0.0.1 ports in a temporary folder (removed with the
servers' data afterwards), creates a source
bucket (versioned on moto, as an AWS bucket sending notifications usually
is; SeaweedFS's is unversioned, read pinned by ETag), then runs the bench
with ``--bootstrap-servers``, ``--endpoint-url`` and ``--bucket`` filled
in and the S3 credentials in the environment. Stops both servers by PID
afterwards and exits with the bench's code. ``./dev bench-kafka`` runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.services.kafka.server import KafkaBroker
from tests.services.moto_server import MotoServer
from tests.services.s3client import S3Endpoint
from tests.services.seaweedfs.server import SeaweedServer

BUCKET = "bench-source"


@contextmanager
def s3_server(kind: str, workdir: Path) -> Iterator[S3Endpoint]:
    server: Any = SeaweedServer(workdir) if kind == "seaweedfs" else MotoServer(workdir)
    try:
        yield server.endpoint
    finally:
        server.stop()


def bench_env(endpoint: S3Endpoint) -> dict[str, str]:
    return os.environ | {
        "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
        "AWS_DEFAULT_REGION": endpoint.region,
    }


def main(argv: list[str]) -> int:
    kind = "moto"
    if argv[:1] == ["--s3"] and len(argv) > 1:
        kind, argv = argv[1], argv[2:]
    if kind not in ("moto", "seaweedfs"):
        print(
            "usage: python -m tests.services.kafka.bench [--s3 moto|seaweedfs] ...", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="replicator-bench-kafka-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        (root / "kafka").mkdir()
        (root / "s3").mkdir()
        broker = KafkaBroker(root / "kafka")
        stack.callback(broker.stop)
        endpoint = stack.enter_context(s3_server(kind, root / "s3"))
        client = endpoint.client()
        client.create_bucket(Bucket=BUCKET)
        if kind == "moto":
            client.put_bucket_versioning(
                Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
            )
        print(f"Kafka at {broker.bootstrap}, {kind} at {endpoint.url}", file=sys.stderr)
        cmd = [sys.executable, "-m", "replicator", "bench", "e2e", "--source", "kafka"]
        cmd += ["--bootstrap-servers", broker.bootstrap, "--endpoint-url", endpoint.url]
        cmd += ["--bucket", BUCKET, *argv]
        return subprocess.run(cmd, env=bench_env(endpoint), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
