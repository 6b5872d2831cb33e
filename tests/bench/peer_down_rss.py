"""Peak RSS and wall time of a backfill whose S3 peer dies part-way, against
the same backfill with a healthy peer.

A measurement, not a test (pytest does not collect it). For each case a
private moto server is the S3 peer and a directory store the other; the
backfill runs as ``replicator backfill`` in a child process that prints its
own peak RSS; in the "dies" case the parent stops the moto server once the
directory peer holds a few manifests.

    .venv/bin/python -m tests.bench.peer_down_rss --files 200 --size 1MiB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replicator.bench.chunk import parse_size
from tests.services.moto_server import MotoServer

CHILD = """
import json, sys
from click.testing import CliRunner
from replicator.cli import main
from replicator.memory import peak_rss_bytes as hwm

base = hwm()
result = CliRunner().invoke(main, ["backfill", "--config", sys.argv[1], "--json"])
summary = json.loads(result.stdout)
print(json.dumps({"exit_code": result.exit_code, "baseline": base, "peak": hwm(),
                  "objects": summary["objects"], "down": summary["down"],
                  "not_sent": summary["not_sent"]}))
"""


def _config(tmp: Path, url: str) -> Path:
    cfg = tmp / "replicator.toml"
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp / "src"}"\n\n'
        f'[[destinations]]\nname = "good"\ntype = "fs"\npath = "{tmp / "good"}"\n\n'
        f'[[destinations]]\nname = "sick"\ntype = "s3"\nbucket = "sick"\n'
        f'endpoint_url = "{url}"\naddressing_style = "path"\n\n'
        f'[store]\ncache_dir = "{tmp / "cache"}"\npack_size = 4194304\n'
    )
    return cfg


def _manifests(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root / "manifests"))


def run_case(tmp: Path, files: int, size: int, *, kill_after: int | None) -> dict[str, object]:
    (tmp / "moto").mkdir(parents=True)
    for i in range(files):
        (tmp / "src").mkdir(exist_ok=True)
        (tmp / "src" / f"shard-{i:04d}").write_bytes(os.urandom(size))
    server = MotoServer(tmp / "moto")
    ep = server.endpoint
    ep.client().create_bucket(Bucket="sick")
    env = os.environ | {"AWS_ACCESS_KEY_ID": ep.access_key_id}
    env["AWS_SECRET_ACCESS_KEY"] = ep.secret_access_key
    cmd = [sys.executable, "-c", CHILD, str(_config(tmp, ep.url))]
    started = time.monotonic()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    killed = None
    while child.poll() is None:
        if kill_after is not None and killed is None and _manifests(tmp / "good") >= kill_after:
            server.stop()
            killed = time.monotonic() - started
        time.sleep(0.05)
    server.stop()
    out: dict[str, object] = json.loads((child.stdout.read() if child.stdout else "").strip())
    growth = int(str(out["peak"])) - int(str(out["baseline"]))
    out["wall_seconds"] = round(time.monotonic() - started, 2)
    out["killed_after_seconds"] = None if killed is None else round(killed, 2)
    out["peak_growth_mib"] = round(growth / 2**20, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=parse_size, default=parse_size("1MiB"))
    ap.add_argument("--kill-after", type=int, default=10, help="manifests at 'good' first")
    args = ap.parse_args()
    for case, kill in (("healthy", None), ("dies", args.kill_after)):
        with tempfile.TemporaryDirectory(prefix=f"replicator-peer-{case}-") as tmp:
            result = run_case(Path(tmp), args.files, args.size, kill_after=kill)
            print(json.dumps({"case": case, "files": args.files, "size": args.size} | result))


if __name__ == "__main__":
    main()
