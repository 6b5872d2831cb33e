"""Peak RSS growth of replicating one large object from an S3 origin.

A measurement, not a test (pytest does not collect it): it starts SeaweedFS
(tests/services), uploads one object of ``--size`` bytes with multipart,
then runs ``replicator backfill`` from that S3 origin to a filesystem peer
in a child process and prints the child's peak RSS growth as JSON. The
design target is < 64 MiB for a 4 GiB object: memory is bounded by the read
window and one open pack, not by the object.

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

from replicator.bench.chunk import parse_size
from tests.services.s3client import S3Endpoint
from tests.services.seaweedfs.server import SeaweedServer

CHILD = """
import json, sys
from click.testing import CliRunner
from replicator.cli import main  # imports done: this is the baseline
from replicator.memory import peak_rss_bytes as hwm

base = hwm()
result = CliRunner().invoke(main, ["backfill", "--config", sys.argv[1], "--json"])
summary = json.loads(result.stdout)
print(result.stderr, file=sys.stderr)
print(json.dumps({"baseline": base, "peak": hwm(), "source_bytes": summary["source_bytes"],
                  "errors": summary["errors"]}))
"""


def _upload(ep: S3Endpoint, size: int, tmp: Path) -> None:
    blob = tmp / "blob"
    with open(blob, "wb") as f:
        for _ in range(size // (64 << 20)):
            f.write(os.urandom(64 << 20))
        f.write(os.urandom(size % (64 << 20)))
    client = ep.client()
    client.create_bucket(Bucket="source")
    upload = client.create_multipart_upload(Bucket="source", Key="big/model.safetensors")
    parts, part = [], 64 << 20
    with open(blob, "rb") as f:
        for n in range(1, size // part + 2):
            body = f.read(part)
            if not body:
                break
            r = client.upload_part(
                Bucket="source",
                Key="big/model.safetensors",
                PartNumber=n,
                UploadId=upload["UploadId"],
                Body=body,
            )
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
    client.complete_multipart_upload(
        Bucket="source",
        Key="big/model.safetensors",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    blob.unlink()


def _config(ep: S3Endpoint, tmp: Path) -> Path:
    path = tmp / "replicator.toml"
    path.write_text(
        f'[source]\ntype = "s3"\nbucket = "source"\n'
        f'[origin]\nendpoint_url = "{ep.url}"\nregion = "{ep.region}"\n'
        f'addressing_style = "path"\n'
        f'[[destinations]]\nname = "dr"\ntype = "fs"\npath = "{tmp / "peer"}"\n'
        f'[store]\ncache_dir = "{tmp / "cache"}"\n'
    )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4GiB")
    ap.add_argument("--debug", action="store_true", help="Show the child's stderr.")
    args = ap.parse_args()
    size, debug = parse_size(args.size), args.debug
    with tempfile.TemporaryDirectory(prefix="replicator-rss-") as t:
        tmp = Path(t)
        (tmp / "weed").mkdir()
        server = SeaweedServer(tmp / "weed", volumes=size // (48 << 20) + 16)
        try:
            ep = server.endpoint
            _upload(ep, size, tmp)
            env = dict(
                os.environ,
                AWS_ACCESS_KEY_ID=ep.access_key_id,
                AWS_SECRET_ACCESS_KEY=ep.secret_access_key,
            )
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(_config(ep, tmp))],
                check=False,
                capture_output=True,
                text=True,
                env=env,
            )
            if debug or proc.returncode:
                print(proc.stderr, file=sys.stderr)
            proc.check_returncode()
            out = proc.stdout
        finally:
            server.stop()
    figures = json.loads(out.strip().splitlines()[-1])
    figures["object_bytes"] = size
    figures["peak_rss_growth_bytes"] = figures["peak"] - figures["baseline"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
