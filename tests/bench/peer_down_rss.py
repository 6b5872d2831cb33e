"""Peak RSS and wall time of a backfill whose peer dies part-way, against
the same backfill with a healthy peer.

A measurement, not a test (pytest does not collect it). For each case the
"sick" peer is a private moto server (``--sick s3``) or a directory store
(``--sick fs``) and a directory store is the "good" one; the backfill runs
as ``replicator backfill`` in a child process that prints its own peak RSS.
In the "dies" case, once the good peer holds a few manifests, the parent
stops the moto server, or makes the sick directory store read-only
(``chattr -R +i``: every write there fails, as on a filesystem remounted
read-only).

    .venv/bin/python -m tests.bench.peer_down_rss --files 200 --size 1MiB --sick fs
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


def _config(tmp: Path, url: str | None) -> Path:
    cfg = tmp / "replicator.toml"
    sick = (
        f'type = "s3"\nbucket = "sick"\nendpoint_url = "{url}"\naddressing_style = "path"\n'
        if url
        else f'type = "fs"\npath = "{tmp / "sick"}"\n'
    )
    cfg.write_text(
        f'[source]\ntype = "fs"\npath = "{tmp / "src"}"\n\n'
        f'[[destinations]]\nname = "good"\ntype = "fs"\npath = "{tmp / "good"}"\n\n'
        f'[[destinations]]\nname = "sick"\n{sick}\n'
        f'[store]\ncache_dir = "{tmp / "cache"}"\npack_size = 4194304\n'
        "format_version = 2\n"  # _manifests counts one file per manifest (format 2 layout)
    )
    return cfg


def _manifests(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root / "manifests"))


def run_case(
    tmp: Path, files: int, size: int, *, kill_after: int | None, sick: str = "s3"
) -> dict[str, object]:
    (tmp / "src").mkdir(parents=True)
    for i in range(files):
        (tmp / "src" / f"shard-{i:04d}").write_bytes(os.urandom(size))
    server = MotoServer(tmp / "moto") if sick == "s3" else None
    env = dict(os.environ)
    url = None
    if server is not None:
        ep = server.endpoint
        ep.client().create_bucket(Bucket="sick")
        env |= {"AWS_ACCESS_KEY_ID": ep.access_key_id}
        env["AWS_SECRET_ACCESS_KEY"] = ep.secret_access_key
        url = ep.url
    cmd = [sys.executable, "-c", CHILD, str(_config(tmp, url))]
    started = time.monotonic()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    killed = None
    try:
        while child.poll() is None:
            if kill_after is not None and killed is None and _manifests(tmp / "good") >= kill_after:
                _kill(server, tmp / "sick")
                killed = time.monotonic() - started
            time.sleep(0.05)
    finally:
        if server is not None:
            server.stop()
        if sick == "fs":
            subprocess.run(["chattr", "-R", "-i", str(tmp / "sick")], check=False)
    out: dict[str, object] = json.loads((child.stdout.read() if child.stdout else "").strip())
    growth = int(str(out["peak"])) - int(str(out["baseline"]))
    out["wall_seconds"] = round(time.monotonic() - started, 2)
    out["killed_after_seconds"] = None if killed is None else round(killed, 2)
    out["peak_growth_mib"] = round(growth / 2**20, 1)
    return out


def _kill(server: MotoServer | None, sick_root: Path) -> None:
    """The sick peer dies: its server stops, or its directory turns read-only."""
    if server is not None:
        server.stop()
    else:
        subprocess.run(["chattr", "-R", "+i", str(sick_root)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=parse_size, default=parse_size("1MiB"))
    ap.add_argument("--kill-after", type=int, default=10, help="manifests at 'good' first")
    ap.add_argument("--sick", choices=("s3", "fs"), default="s3", help="kind of the dying peer")
    args = ap.parse_args()
    for case, kill in (("healthy", None), ("dies", args.kill_after)):
        with tempfile.TemporaryDirectory(prefix=f"replicator-peer-{case}-") as tmp:
            result = run_case(Path(tmp), args.files, args.size, kill_after=kill, sick=args.sick)
            head = {"case": case, "sick": args.sick, "files": args.files, "size": args.size}
            print(json.dumps(head | result))


if __name__ == "__main__":
    main()
