"""``replicator status`` as a real process against a real served Telemetry."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replicator.events import ChangeEvent, Kind
from replicator.metrics import MetricsServer, SourceLink, Telemetry, serve

CLI = "from replicator.cli import main; main()"


@pytest.fixture
async def daemon() -> AsyncIterator[tuple[Telemetry, MetricsServer]]:
    telemetry = Telemetry(["peer-a", "peer-b"], {"peer-a": 30.0, "peer-b": 30.0})
    telemetry.set_ready(True)
    for peer in ("peer-a", "peer-b"):
        telemetry.set_peer_up(peer, True)
    server = await serve(telemetry, "127.0.0.1:0")
    try:
        yield telemetry, server
    finally:
        await server.close()


async def status(*args: str, stdout: int = asyncio.subprocess.PIPE) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        "status",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, (out or b"").decode(), err.decode()


def old_change(age: float) -> ChangeEvent:
    return ChangeEvent("src", "local", "k", Kind.CREATED, time.time_ns() - int(age * 1e9))


async def test_within_target_exits_0_with_json_off_a_terminal(
    daemon: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = daemon
    telemetry.pending("peer-a", old_change(3.0), 1234)
    code, out, err = await status("--address", f"127.0.0.1:{server.port}")
    assert code == 0, err
    peers = json.loads(out)["destinations"]
    assert peers["peer-a"]["pending_events"] == 1
    assert peers["peer-a"]["pending_bytes"] == 1234
    assert 3.0 <= peers["peer-a"]["rpo_seconds"] < 30
    assert peers["peer-b"]["rpo_seconds"] == 0


async def test_a_peer_over_its_target_exits_1_and_is_named(
    daemon: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = daemon
    telemetry.pending("peer-b", old_change(45.0), 1)
    code, out, err = await status("--address", f"127.0.0.1:{server.port}", "--json")
    assert code == 1
    assert json.loads(out)["destinations"]["peer-b"]["over_target"] is True
    assert "peer-b" in err
    assert "peer-a" not in err


async def test_no_daemon_exits_2_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code, out, err = await status("--address", f"127.0.0.1:{port}")
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: no replicator daemon answers at 127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


async def test_table_on_a_terminal(daemon: tuple[Telemetry, MetricsServer]) -> None:
    telemetry, server = daemon
    telemetry.pending("peer-a", old_change(2.0), 3 * 1024 * 1024)
    leader, follower = pty.openpty()
    try:
        code, _, err = await status("--address", f"127.0.0.1:{server.port}", stdout=follower)
        os.close(follower)
        out = _drain(leader)
    finally:
        os.close(leader)
    assert code == 0, err
    assert "peer-a" in out
    assert "3.0 MiB" in out
    assert "ready" in out
    assert not out.lstrip().startswith("{")


async def test_a_kafka_source_not_connected_is_shown(
    daemon: tuple[Telemetry, MetricsServer],
) -> None:
    telemetry, server = daemon
    problem = "kafka group coordinator not answering for 12 s"
    telemetry.set_source_link(SourceLink(lambda: problem, lambda: 3))
    code, out, err = await status("--address", f"127.0.0.1:{server.port}", "--json")
    assert code == 0, err  # every peer within its target: readiness is not the RPO
    doc = json.loads(out)
    assert doc["ready"] is False
    assert doc["reason"] == f"source not connected: {problem}"
    want = {"connected": False, "problem": problem, "reconnects": 3}
    assert doc["source"].items() >= want.items()
    leader, follower = pty.openpty()
    try:
        code, _, err = await status("--address", f"127.0.0.1:{server.port}", stdout=follower)
        os.close(follower)
        # Styles stripped, wrapped lines joined: the words are what is checked.
        table = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", _drain(leader)).split())
    finally:
        os.close(leader)
    assert f"not ready: source not connected: {problem}" in table
    assert f"source not connected: {problem}; 3 reconnect(s)" in table


async def test_address_comes_from_the_config(
    daemon: tuple[Telemetry, MetricsServer], tmp_path: Path
) -> None:
    _, server = daemon
    cfg = tmp_path / "replicator.toml"
    cfg.write_text(
        f"""
[source]
type = "fs"
path = "{tmp_path / "src"}"

[[destinations]]
name = "peer-a"
type = "fs"
path = "{tmp_path / "a"}"

[service]
metrics_address = "127.0.0.1:{server.port}"
"""
    )
    code, out, err = await status("--config", str(cfg))
    assert code == 0, err
    assert "peer-b" in json.loads(out)["destinations"]


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO once the writer side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")
