"""Logging: JSON lines off a terminal, readable on one, and never a secret.

Each case runs a real Python process that configures logging the way the
daemon does, holds canary secrets in the places they leak from in practice
(a traceback frame's locals, botocore's DEBUG header dump, a field named
like a credential), and logs; the test reads what reached stderr.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

CANARY = "CANARY-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"

SCRIPT = """
import logging, os, structlog
from replicator.logs import configure

configure("debug")
log = structlog.get_logger("replicator.test")

def sign_request():
    secret_access_key = os.environ["AWS_SECRET_ACCESS_KEY"]  # a local in the frame
    raise RuntimeError("signing failed")

try:
    sign_request()
except RuntimeError:
    log.exception("upload failed", destination="peer-a")
secret = os.environ["AWS_SECRET_ACCESS_KEY"]
logging.getLogger("botocore.endpoint").debug("headers: Authorization=%s", secret)
logging.getLogger("aiobotocore.client").debug("credentials %s", secret)
log.info("connected", aws_secret_access_key=secret, sasl_password=secret, peer="peer-b")
logging.getLogger("aiohttp.server").warning("from the stdlib")
"""


def run(stderr: int | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=CANARY)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        check=True,
        timeout=60,
    )


def test_json_lines_off_a_terminal_and_no_canary() -> None:
    err = run().stderr.decode()
    assert CANARY not in err
    lines = [json.loads(line) for line in err.splitlines()]
    by_event = {line["event"]: line for line in lines}
    failed = by_event["upload failed"]
    assert failed["level"] == "error"
    assert failed["destination"] == "peer-a"
    frames = failed["exception"][0]["frames"]
    assert frames
    assert all("locals" not in f or not f["locals"] for f in frames)
    assert failed["exception"][0]["exc_value"] == "signing failed"
    connected = by_event["connected"]
    assert connected["aws_secret_access_key"] == "[redacted]"
    assert connected["sasl_password"] == "[redacted]"
    assert connected["peer"] == "peer-b"
    assert by_event["from the stdlib"]["logger"] == "aiohttp.server"
    assert not any(line["event"].startswith(("headers", "credentials")) for line in lines)


def test_readable_on_a_terminal_and_no_canary() -> None:
    leader, follower = pty.openpty()
    try:
        run(stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the writer side is closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    out = b"".join(chunks).decode(errors="replace")
    assert CANARY not in out
    assert "upload failed" in out
    assert "RuntimeError" in out
    assert "signing failed" in out
    assert not out.lstrip().startswith("{")
