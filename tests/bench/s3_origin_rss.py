"""Peak RSS growth of replicating one large object from an S3 origin.

A measurement, not a test (pytest does not collect this file; a tiny-scale
run in tests/integration/test_s3_origin_rss.py checks that it works). It
starts SeaweedFS (tests/services), uploads a tiny object and one object of
``--size`` bytes (multipart) under two prefixes of one bucket, then runs
``replicator backfill`` from each prefix in its own child process, with the
same configuration otherwise, and reports both peaks.

What the object costs is ``peak_rss_growth_bytes``: the large object's peak
minus the tiny object's. Both children load the same libraries and open the
same S3 client (aiobotocore, botocore's S3 model and endpoint rules,
aiohttp), a fixed cost a running daemon pays once; measured from the
high-water mark after ``import replicator.cli`` (the old baseline, still
reported as ``growth_from_imports_bytes``), that fixed cost was counted as
if the object caused it. The design target is < 48 MiB for a 4 GiB object.

    .venv/bin/python -m tests.bench.s3_origin_rss --size 4GiB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from replicator.bench.chunk import parse_size
from tests.services.s3client import S3Endpoint
from tests.services.seaweedfs.server import SeaweedServer

CHILD = """
import json, sys
from click.testing import CliRunner
from replicator.cli import main  # imports done: the old baseline
from replicator.memory import peak_rss_bytes as hwm

base = hwm()
result = CliRunner().invoke(main, ["backfill", "--config", sys.argv[1], "--json"])
summary = json.loads(result.stdout)
print(result.stderr, file=sys.stderr)
print(json.dumps({"baseline": base, "peak": hwm(), "source_bytes": summary["source_bytes"],
                  "errors": summary["errors"]}))
"""
#: The reference object: every fixed cost of the S3 path, next to no object.
TINY_BYTES = 1024
PART = 64 << 20


def _write_blob(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // PART):
            f.write(os.urandom(PART))
        f.write(os.urandom(size % PART))


def upload(client: Any, bucket: str, key: str, size: int, tmp: Path) -> None:
    """One object of ``size`` random bytes, in 64 MiB multipart parts (as large models are)."""
    blob = tmp / "blob"
    _write_blob(blob, size)
    mpu = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    with open(blob, "rb") as f:
        for n in range(1, size // PART + 2):
            body = f.read(PART)
            if not body:
                break
            r = client.upload_part(
                Bucket=bucket, Key=key, PartNumber=n, UploadId=mpu["UploadId"], Body=body
            )
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
    )
    blob.unlink()


def _config(ep: S3Endpoint, bucket: str, work: Path, prefix: str) -> Path:
    """The same configuration for both runs but the prefix (fresh peer and cache each)."""
    work.mkdir()
    path = work / "replicator.toml"
    path.write_text(
        f'[source]\ntype = "s3"\nbucket = "{bucket}"\nprefix = "{prefix}"\n'
        f'[origin]\nendpoint_url = "{ep.url}"\nregion = "{ep.region}"\n'
        f'addressing_style = "path"\n'
        f'[[destinations]]\nname = "dr"\ntype = "fs"\npath = "{work / "peer"}"\n'
        f'[store]\ncache_dir = "{work / "cache"}"\n'
    )
    return path


def _child(ep: S3Endpoint, config: Path, debug: bool) -> dict[str, Any]:
    env = dict(
        os.environ, AWS_ACCESS_KEY_ID=ep.access_key_id, AWS_SECRET_ACCESS_KEY=ep.secret_access_key
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    if debug or proc.returncode:
        print(proc.stderr, file=sys.stderr)
    proc.check_returncode()
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def measure(
    ep: S3Endpoint, size: int, tmp: Path, *, bucket: str = "source", debug: bool = False
) -> dict[str, Any]:
    """Both runs against a running S3 server (``bucket`` is created); the figures, in bytes."""
    client = ep.client()
    client.create_bucket(Bucket=bucket)
    upload(client, bucket, "tiny/object.bin", TINY_BYTES, tmp)
    upload(client, bucket, "big/model.safetensors", size, tmp)
    tiny = _child(ep, _config(ep, bucket, tmp / "tiny", "tiny/"), debug)
    big = _child(ep, _config(ep, bucket, tmp / "big", "big/"), debug)
    return {
        "object_bytes": size,
        "tiny_object_bytes": TINY_BYTES,
        "tiny": tiny,
        "big": big,
        "peak_rss_growth_bytes": big["peak"] - tiny["peak"],
        "growth_from_imports_bytes": big["peak"] - big["baseline"],
        "tiny_growth_from_imports_bytes": tiny["peak"] - tiny["baseline"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4GiB")
    ap.add_argument("--debug", action="store_true", help="Show the children's stderr.")
    args = ap.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="replicator-rss-") as t:
        tmp = Path(t)
        (tmp / "weed").mkdir()
        server = SeaweedServer(tmp / "weed", volumes=size // (48 << 20) + 16)
        try:
            figures = measure(server.endpoint, size, tmp, debug=args.debug)
        finally:
            server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
