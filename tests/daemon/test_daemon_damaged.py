"""A format 3 peer's segment that the running daemon cannot read is named by
``replicator status`` (one line per segment, exit 1), from the daemon's own
``/status``: the manifests in it are invisible to every reader."""

from __future__ import annotations

from pathlib import Path

from tests.daemon.harness import Daemon, replicator, wait_until, write_config

#: A segment name (segments/<bucket>/<hh>/<BLAKE3 hex>) whose bytes are garbage.
GARBLED = "segments/local/ab/ab" + "0" * 62


def test_status_names_a_segment_the_daemon_could_not_read(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "src" / "f").write_bytes(b"one file, so that the start-up reconcile reads peers")
    garbled = tmp_path / "a" / GARBLED
    garbled.parent.mkdir(parents=True)
    garbled.write_bytes(b"garbage over a segment\n" * 20)
    daemon = Daemon(cfg, tmp_path / "daemon.log")
    daemon.wait_ready()

    def named() -> bool:
        return bool(daemon.status()["destinations"]["a"]["damaged_segments"])

    wait_until(named, "peer a's damaged segment in /status", daemon)
    status = daemon.status()["destinations"]
    assert status["b"]["damaged_segments"] == []
    ((found),) = status["a"]["damaged_segments"]
    assert found["segment"] == GARBLED and "do not hash to its name" in found["why"], found
    ran = replicator("status", "--address", f"127.0.0.1:{daemon.port}")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    line = f"damaged segment at 'a': {GARBLED}: its bytes do not hash to its name"
    assert ran.stderr.splitlines() == [line], ran.stderr
    assert daemon.stop() == 0, daemon.log_tail()
    print(ran.stderr.strip())
